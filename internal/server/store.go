package server

import (
	"context"
	"fmt"

	"github.com/stacyvm/stacyvm/internal/config"
	"github.com/stacyvm/stacyvm/internal/store"
	"github.com/stacyvm/stacyvm/internal/store/postgres"
	"github.com/stacyvm/stacyvm/internal/store/sqlite"
)

// openStore opens the store cfg names and returns it with a description
// for logs that never holds a secret (a DSN's password).
func openStore(ctx context.Context, cfg *config.Config) (store.Store, string, error) {
	switch cfg.Store.Driver {
	case config.StorePostgres:
		st, err := postgres.Open(ctx, postgres.Config{DSN: cfg.Store.DSN})
		if err != nil {
			return nil, "", fmt.Errorf("open store: %w", err)
		}
		return st, postgres.Describe(cfg.Store.DSN), nil
	default:
		st, err := sqlite.Open(ctx, cfg.Store.Path)
		if err != nil {
			return nil, "", fmt.Errorf("open store: %w", err)
		}
		return st, cfg.Store.Path, nil
	}
}
