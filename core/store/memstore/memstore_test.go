package memstore_test

import (
	"testing"

	"github.com/avonzt/avon/core/store"
	"github.com/avonzt/avon/core/store/memstore"
	"github.com/avonzt/avon/core/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(*testing.T) store.KV { return memstore.New() })
}
