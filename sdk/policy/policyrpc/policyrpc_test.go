package policyrpc

import (
	"context"
	"fmt"
	"net"
	"reflect"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/avonzt/avon/sdk/policy"
)

// echoEngine records the request it gets and answers one decision per
// query, made from the query.
type echoEngine struct {
	policy.Engine
	got *policy.EvaluateRequest
}

func (e *echoEngine) Evaluate(_ context.Context, r *policy.EvaluateRequest) (*policy.EvaluateResponse, error) {
	e.got = r
	out := &policy.EvaluateResponse{Version: 7}
	for i, q := range r.Queries {
		d := policy.Decision{Allow: i%2 == 0, Reasons: []string{q.Principal.ID + " " + string(q.Context)}}
		if i%3 == 0 {
			d.DeterminingPolicies = []string{fmt.Sprintf("p%d", i), "q"}
		}
		if i%5 == 0 {
			d.Errors, d.ReportOnly = []string{"e"}, true
		}
		out.Decisions = append(out.Decisions, d)
	}
	return out, nil
}

// TestEvaluateRoundTrip: a batch crosses a real gRPC connection on
// loopback and arrives as sent; the decisions come back as answered.
func TestEvaluateRoundTrip(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	eng := &echoEngine{}
	Register(srv, eng)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	c := NewClient(cc)

	req := &policy.EvaluateRequest{PolicySetID: "corp",
		Entities: []policy.Entity{
			{Ref: policy.EntityRef{Type: "Group", ID: "eng"}, Attributes: []byte(`{"name":"eng"}`)},
			{Ref: policy.EntityRef{Type: "Agent", ID: "laptop"}, Attributes: []byte(`{"name":"laptop","os":"linux"}`),
				Parents: []policy.EntityRef{{Type: "Group", ID: "eng"}, {Type: "User", ID: "alice"}}},
			{Ref: policy.EntityRef{Type: "Api", ID: "x"}},
		}}
	for i := range 11 {
		req.Queries = append(req.Queries, policy.Query{Principal: policy.EntityRef{Type: "Agent", ID: fmt.Sprintf("a%d", i)},
			Action: policy.EntityRef{Type: "Action", ID: "reach"}, Resource: policy.EntityRef{Type: "Service", ID: fmt.Sprintf("tcp/10.0.0.%d:443", i)},
			Context: fmt.Appendf(nil, `{"n":%d}`, i)})
	}
	resp, err := c.Evaluate(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	// Empty attributes cross as nil.
	want := *req
	want.Entities = append([]policy.Entity(nil), req.Entities...)
	want.Entities[2].Attributes = nil
	if !reflect.DeepEqual(eng.got, &want) {
		t.Fatalf("sent %+v\ngot  %+v", &want, eng.got)
	}
	local, _ := eng.Evaluate(context.Background(), req)
	if resp.Version != 7 || len(resp.Decisions) != len(req.Queries) {
		t.Fatalf("%+v", resp)
	}
	for i, d := range resp.Decisions {
		w := local.Decisions[i]
		if d.Allow != w.Allow || d.ReportOnly != w.ReportOnly || !reflect.DeepEqual(d.Reasons, w.Reasons) ||
			!reflect.DeepEqual(d.Errors, w.Errors) || !reflect.DeepEqual(d.DeterminingPolicies, w.DeterminingPolicies) {
			t.Fatalf("decision %d: got %+v, want %+v", i, d, w)
		}
	}

	// A batch with neither entities nor queries.
	resp, err = c.Evaluate(context.Background(), &policy.EvaluateRequest{})
	if err != nil || len(resp.Decisions) != 0 || len(eng.got.Queries) != 0 || len(eng.got.Entities) != 0 {
		t.Fatalf("%+v %v %+v", resp, err, eng.got)
	}
}
