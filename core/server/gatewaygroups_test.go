package server

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/avonzt/avon/core/agents"
	"github.com/avonzt/avon/core/store/memstore"
)

// TestAgentGroups: the gateway's policy queries carry the group an agent
// enrolled into; an agent the registry does not know refuses the session
// (an error), and one without a group belongs to none.
func TestAgentGroups(t *testing.T) {
	kv := memstore.New()
	s := &Server{store: kv}
	ctx := context.Background()
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	reg := agents.New(kv)
	for _, a := range []agents.Agent{
		{ID: "laptop", Group: "eng", CertSerial: "01", CertNotAfter: now.Add(time.Hour)},
		{ID: "kiosk", CertSerial: "02", CertNotAfter: now.Add(time.Hour)},
	} {
		if _, err := reg.Enrolled(ctx, a, now); err != nil {
			t.Fatal(err)
		}
	}
	if g, err := s.agentGroups(ctx, "laptop"); err != nil || !slices.Equal(g, []string{"eng"}) {
		t.Fatalf("laptop: %v %v", g, err)
	}
	if g, err := s.agentGroups(ctx, "kiosk"); err != nil || len(g) != 0 {
		t.Fatalf("kiosk: %v %v", g, err)
	}
	if _, err := s.agentGroups(ctx, "stranger"); !errors.Is(err, agents.ErrNotFound) {
		t.Fatalf("stranger: %v, want ErrNotFound", err)
	}
}
