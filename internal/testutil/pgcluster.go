package testutil

import (
	"context"
	"errors"
	"sync"

	"github.com/watermill-sls/watermill-sls/internal/pgcluster"
)

var (
	clusterMu  sync.Mutex
	cluster    *pgcluster.Cluster
	clusterErr error
)

// localClusterURL starts the test binary's cluster on first use and returns its maintenance URL. A failed start
// is remembered so that every later test fails with the same error quickly.
func localClusterURL() (string, error) {
	clusterMu.Lock()
	defer clusterMu.Unlock()
	if cluster == nil && clusterErr == nil {
		ctx, cancel := context.WithTimeout(context.Background(), pgcluster.StartupTimeout)
		defer cancel()
		cluster, clusterErr = pgcluster.Start(ctx)
	}
	if clusterErr != nil {
		return "", clusterErr
	}
	return cluster.URL(), nil
}

// stopLocalCluster stops the cluster if this test binary started one.
func stopLocalCluster() error {
	clusterMu.Lock()
	defer clusterMu.Unlock()
	if cluster == nil {
		return nil
	}
	err := cluster.Stop()
	cluster = nil
	clusterErr = errors.New("testutil: the PostgreSQL cluster was already stopped by testutil.Main")
	return err
}
