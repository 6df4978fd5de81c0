package plugin

import (
	"context"
	"fmt"
	"sync"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/host"
	pluginv1 "github.com/avonzt/avon/sdk/proto/plugin/v1"
)

// baseServer serves avon.plugin.v1.Plugin for one implementation.
type baseServer struct {
	pluginv1.UnimplementedPluginServer
	impl   Plugin
	kind   Kind
	caps   []string
	broker *goplugin.GRPCBroker

	mu    sync.Mutex // guards conns: broker connections of the current configuration
	conns []*grpc.ClientConn
}

func (s *baseServer) GetInfo(context.Context, *pluginv1.GetInfoRequest) (*pluginv1.GetInfoResponse, error) {
	info := s.impl.Info()
	return &pluginv1.GetInfoResponse{
		Name: info.Name, Version: info.Version, Kind: string(s.kind),
		ProtocolMinor: ProtocolMinor, Capabilities: s.caps, Metadata: info.Metadata,
	}, nil
}

func (s *baseServer) GetConfigSchema(context.Context, *pluginv1.GetConfigSchemaRequest) (*pluginv1.GetConfigSchemaResponse, error) {
	b, err := s.impl.ConfigSchema().MarshalJSON()
	if err != nil {
		return nil, errdef.ToStatus(fmt.Errorf("marshal config schema: %w", errdef.ErrInternal))
	}
	return &pluginv1.GetConfigSchemaResponse{SchemaJson: b}, nil
}

func (s *baseServer) ValidateConfig(ctx context.Context, req *pluginv1.ValidateConfigRequest) (*pluginv1.ValidateConfigResponse, error) {
	v, ok := s.impl.(ConfigValidator)
	if !ok {
		return &pluginv1.ValidateConfigResponse{}, nil
	}
	return &pluginv1.ValidateConfigResponse{Problems: problemsToProto(v.ValidateConfig(ctx, req.GetConfigJson()))}, nil
}

func (s *baseServer) Configure(ctx context.Context, req *pluginv1.ConfigureRequest) (*pluginv1.ConfigureResponse, error) {
	var conns []*grpc.ClientConn
	closeAll := func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}
	dial := func(id uint32) (*grpc.ClientConn, error) {
		c, err := s.broker.DialWithOptions(id, grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(MaxMessageSize), grpc.MaxCallSendMsgSize(MaxMessageSize)))
		if err != nil {
			return nil, err
		}
		conns = append(conns, c)
		return c, nil
	}
	hc, err := dial(req.GetHostBrokerId())
	if err != nil {
		closeAll()
		return nil, errdef.ToStatus(fmt.Errorf("dial host services: %v: %w", err, errdef.ErrInternal))
	}
	uses := map[string]grpc.ClientConnInterface{}
	for kind, id := range req.GetUses() {
		c, err := dial(id)
		if err != nil {
			closeAll()
			return nil, errdef.ToStatus(fmt.Errorf("dial wired %s plugin: %v: %w", kind, err, errdef.ErrInternal))
		}
		uses[kind] = c
	}
	err = s.impl.Configure(ctx, &ConfigureRequest{
		Config:   req.GetConfigJson(),
		Host:     host.NewClient(hc, uses),
		DataDir:  req.GetDataDir(),
		Instance: req.GetInstance(),
	})
	if err != nil {
		closeAll()
		return &pluginv1.ConfigureResponse{Problems: problemsToProto(problemsOf(err))}, nil
	}
	s.mu.Lock()
	old := s.conns
	s.conns = conns
	s.mu.Unlock()
	for _, c := range old {
		_ = c.Close()
	}
	return &pluginv1.ConfigureResponse{}, nil
}

func (s *baseServer) Health(ctx context.Context, _ *pluginv1.HealthRequest) (*pluginv1.HealthResponse, error) {
	hc, ok := s.impl.(HealthChecker)
	if !ok {
		return &pluginv1.HealthResponse{Ok: true}, nil
	}
	if err := hc.Health(ctx); err != nil {
		return &pluginv1.HealthResponse{Ok: false, Message: err.Error()}, nil
	}
	return &pluginv1.HealthResponse{Ok: true}, nil
}

func problemsToProto(ps []Problem) []*pluginv1.ConfigProblem {
	out := make([]*pluginv1.ConfigProblem, 0, len(ps))
	for _, p := range ps {
		out = append(out, &pluginv1.ConfigProblem{Attribute: p.Attribute, Summary: p.Summary, Detail: p.Detail})
	}
	return out
}

// ProblemsFromProto converts wire problems (host side).
func ProblemsFromProto(ps []*pluginv1.ConfigProblem) []Problem {
	out := make([]Problem, 0, len(ps))
	for _, p := range ps {
		out = append(out, Problem{Attribute: p.GetAttribute(), Summary: p.GetSummary(), Detail: p.GetDetail()})
	}
	return out
}
