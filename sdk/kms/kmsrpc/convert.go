package kmsrpc

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/avonzt/avon/sdk/kms"
	kmsv1 "github.com/avonzt/avon/sdk/proto/kms/v1"
)

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func fromTS(t *timestamppb.Timestamp) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.AsTime()
}

func keyToProto(k *kms.Key) *kmsv1.Key {
	if k == nil {
		return nil
	}
	p := &kmsv1.Key{
		Id:             k.ID,
		Algorithm:      string(k.Algorithm),
		Labels:         k.Labels,
		Exportable:     k.Exportable,
		PrimaryVersion: uint32(k.PrimaryVersion),
		CreatedAt:      ts(k.CreatedAt),
	}
	for _, v := range k.Versions {
		p.Versions = append(p.Versions, &kmsv1.KeyVersion{
			Version:     uint32(v.Version),
			State:       string(v.State),
			CreatedAt:   ts(v.CreatedAt),
			DestroyedAt: ts(v.DestroyedAt),
			PublicKey:   v.PublicKey,
		})
	}
	return p
}

func keyFromProto(p *kmsv1.Key) *kms.Key {
	if p == nil {
		return nil
	}
	k := &kms.Key{
		ID:             p.GetId(),
		Algorithm:      kms.Algorithm(p.GetAlgorithm()),
		Labels:         p.GetLabels(),
		Exportable:     p.GetExportable(),
		PrimaryVersion: int(p.GetPrimaryVersion()),
		CreatedAt:      fromTS(p.GetCreatedAt()),
	}
	for _, v := range p.GetVersions() {
		k.Versions = append(k.Versions, kms.KeyVersion{
			Version:     int(v.GetVersion()),
			State:       kms.VersionState(v.GetState()),
			CreatedAt:   fromTS(v.GetCreatedAt()),
			DestroyedAt: fromTS(v.GetDestroyedAt()),
			PublicKey:   v.GetPublicKey(),
		})
	}
	return k
}

// u32 converts a non-negative version or length to the wire type; negative
// values become 0, which every method treats as "primary" or rejects.
func u32(v int) uint32 {
	if v < 0 {
		return 0
	}
	return uint32(v)
}
