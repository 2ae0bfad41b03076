package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// configTables are the README's configuration tables: the heading of each
// table and the struct it documents (directory from the repository root,
// type name).
var configTables = []struct{ heading, dir, typ string }{
	{"`slspubsub.ClientConfig`", "slspubsub", "ClientConfig"},
	{"`slspubsub.PublisherConfig`", "slspubsub", "PublisherConfig"},
	{"`slspubsub.SubscriberConfig`", "slspubsub", "SubscriberConfig"},
	{"`slspubsub.WatermarkConfig`", "slspubsub", "WatermarkConfig"},
	{"`slspubsub.AlignmentConfig`", "slspubsub", "AlignmentConfig"},
	{"`watermark.Strategy`", "watermark", "Strategy"},
	{"`watermark.PostgresCoordinatorConfig`", "watermark", "PostgresCoordinatorConfig"},
	{"`watermark.WindowConfig`", "watermark", "WindowConfig"},
	{"`exactlyonce.StoreConfig`", "exactlyonce", "StoreConfig"},
	{"`exactlyonce.HandlerConfig`", "exactlyonce", "HandlerConfig"},
	{"`exactlyonce.BatchConfig`", "exactlyonce", "BatchConfig"},
	{"`exactlyonce.KafkaSinkConfig`", "exactlyonce", "KafkaSinkConfig"},
	{"`outbox.PublisherConfig`", "outbox", "PublisherConfig"},
	{"`outbox.RelayConfig`", "outbox", "RelayConfig"},
	{"`outboxkafka.Config`", "outbox/outboxkafka", "Config"},
}

// structFields returns the field names of type typ declared in the
// non-test Go files of dir (an embedded field by its type name).
func structFields(t *testing.T, dir, typ string) []string {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			gen, ok := decl.(*ast.GenDecl)
			if !ok || gen.Tok != token.TYPE {
				continue
			}
			for _, spec := range gen.Specs {
				ts := spec.(*ast.TypeSpec)
				st, ok := ts.Type.(*ast.StructType)
				if ts.Name.Name != typ || !ok {
					continue
				}
				var fields []string
				for _, fl := range st.Fields.List {
					if len(fl.Names) == 0 { // embedded
						expr := fl.Type
						if star, ok := expr.(*ast.StarExpr); ok {
							expr = star.X
						}
						switch e := expr.(type) {
						case *ast.Ident:
							fields = append(fields, e.Name)
						case *ast.SelectorExpr:
							fields = append(fields, e.Sel.Name)
						}
						continue
					}
					for _, n := range fl.Names {
						if n.IsExported() {
							fields = append(fields, n.Name)
						}
					}
				}
				return fields
			}
		}
	}
	t.Fatalf("no struct type %s in %s", typ, dir)
	return nil
}

// TestREADMEConfigTables fails when a configuration struct has a field its
// README table does not list, or the table lists a field the struct no
// longer has.
func TestREADMEConfigTables(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `([A-Za-z0-9]+)`")
	for _, ct := range configTables {
		t.Run(ct.typ, func(t *testing.T) {
			start := strings.Index(string(readme), "\n#### "+ct.heading+"\n")
			if start < 0 {
				t.Fatalf("README.md has no '#### %s' heading", ct.heading)
			}
			section := string(readme[start+1:])
			if end := strings.Index(section[1:], "\n#"); end >= 0 {
				section = section[:end+1]
			}
			listed := map[string]bool{}
			for _, m := range row.FindAllStringSubmatch(section, -1) {
				listed[m[1]] = true
			}
			fields := structFields(t, filepath.Join("../..", ct.dir), ct.typ)
			have := map[string]bool{}
			for _, f := range fields {
				have[f] = true
				if !listed[f] {
					t.Errorf("README table %s lacks the field %s", ct.heading, f)
				}
			}
			for f := range listed {
				if !have[f] {
					t.Errorf("README table %s lists %s, which %s/%s does not have", ct.heading, f, ct.dir, ct.typ)
				}
			}
		})
	}
}
