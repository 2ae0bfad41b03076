package outbox

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
)

type txContextKey struct{}

// ContextWithTx returns a copy of ctx carrying tx, for code that opens the business transaction and calls a
// handler that publishes (see PublisherFromContext).
func ContextWithTx(ctx context.Context, tx pgx.Tx) context.Context {
	return context.WithValue(ctx, txContextKey{}, tx)
}

// TxFromContext returns the transaction ContextWithTx put in ctx.
func TxFromContext(ctx context.Context) (pgx.Tx, bool) {
	tx, ok := ctx.Value(txContextKey{}).(pgx.Tx)
	return tx, ok && tx != nil
}

// ErrNoTx is returned by PublisherFromContext when the context carries no transaction.
var ErrNoTx = errors.New("outbox: no transaction in the context; wrap it with outbox.ContextWithTx")

// PublisherFromContext returns a Publisher bound to the transaction in ctx (see ContextWithTx), or ErrNoTx.
func PublisherFromContext(ctx context.Context, config PublisherConfig) (*Publisher, error) {
	tx, ok := TxFromContext(ctx)
	if !ok {
		return nil, ErrNoTx
	}
	return NewPublisher(tx, config)
}
