package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/avonzt/avon/core/store"
	"github.com/avonzt/avon/internal/pqx509"
	sdkca "github.com/avonzt/avon/sdk/ca"
	"github.com/avonzt/avon/sdk/kms"
	sdkplugin "github.com/avonzt/avon/sdk/plugin"
)

// The gateway's own identity: an ML-DSA-65 key in the KMS ("avon-gateway")
// certified by the CA plugin under the gateway profile, made at first start
// the same way an agent enrolls (a CSR signed by the key), and renewed at
// start when less than a third of its lifetime is left.
const (
	gatewayKeyID   = "avon-gateway"
	gatewayCertKey = "gateway/certificate"
)

// GatewayCertificate is what the store keeps (gateway/certificate).
type GatewayCertificate struct {
	ID          string    `json:"id"` // the gateway's name in avon://gateway/<id>
	Certificate []byte    `json:"certificate"`
	Chain       [][]byte  `json:"chain"`
	Serial      string    `json:"serial"`
	NotAfter    time.Time `json:"not_after"`
	IssuedAt    time.Time `json:"issued_at"`
}

var gatewayIDRE = regexp.MustCompile(`[^a-z0-9._-]+`)

// gatewayID derives the gateway's name from the host name.
func gatewayID() string {
	h, _ := os.Hostname()
	id := strings.Trim(gatewayIDRE.ReplaceAllString(strings.ToLower(h), "-"), "-._")
	if id == "" {
		id = "gateway"
	}
	if len(id) > 64 {
		id = id[:64]
	}
	return id
}

// kmsCSRSigner signs a CSR with a KMS key.
type kmsCSRSigner struct {
	k   *kmsSigner
	pub pqx509.PublicKey
}

func (s kmsCSRSigner) Public() pqx509.PublicKey { return s.pub }
func (s kmsCSRSigner) Sign(ctx context.Context, msg []byte) ([]byte, error) {
	sig, _, err := s.k.sign(ctx, msg)
	return sig, err
}

// gatewayPlugins names the CA plugin that certifies the gateway and the
// KMS plugin holding its key ("" when there is none).
func (s *Server) gatewayPlugins() (caInst, kmsName string) {
	kmsName = s.cfg.Calibration.KMS
	for _, inst := range s.plugins.Instances() {
		if inst.Spec().Kind == sdkplugin.Kind("ca") && caInst == "" {
			caInst = inst.Spec().Name
		}
		if inst.Spec().Kind == sdkplugin.Kind("kms") && kmsName == "" {
			kmsName = inst.Spec().Name
		}
	}
	return caInst, kmsName
}

// ensureGatewayCertificate issues (or renews) the gateway certificate when
// a CA plugin and a KMS plugin are configured.
func (s *Server) ensureGatewayCertificate(ctx context.Context) error {
	caInst, kmsName := s.gatewayPlugins()
	if caInst == "" || kmsName == "" {
		return nil
	}
	now, err := s.calib.Now()
	if err != nil {
		return fmt.Errorf("gateway certificate: no trusted time: %w", err)
	}
	if e, err := s.store.Get(ctx, gatewayCertKey); err == nil {
		var gc GatewayCertificate
		if json.Unmarshal(e.Value, &gc) == nil && now.Before(gc.NotAfter.Add(-gc.NotAfter.Sub(gc.IssuedAt)/3)) {
			return nil // still fresh
		}
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	ks, err := newKMSSigner(ctx, s.plugins, kmsName, gatewayKeyID, "gateway-identity")
	if err != nil {
		return err
	}
	_, alg, pub := ks.current()
	if alg != kms.MLDSA65 {
		return fmt.Errorf("gateway key %s is %s, want ML-DSA-65", gatewayKeyID, alg)
	}
	id := gatewayID()
	csr, err := pqx509.CreateCSR(ctx, pqx509.CSRTemplate{}, kmsCSRSigner{k: ks, pub: pqx509.PublicKey{Algorithm: string(alg), Raw: pub}})
	if err != nil {
		return fmt.Errorf("gateway CSR: %w", err)
	}
	inst, _ := s.plugins.Get(sdkplugin.Kind("ca"), caInst)
	resp, err := inst.CA().Issue(ctx, &sdkca.IssueRequest{CSR: csr, Profile: "gateway", CommonName: id, URIs: []string{"avon://gateway/" + id}})
	if errors.Is(err, sdkca.ErrNotInitialized) {
		// A CA with init = "manual": the certificate is issued right
		// after avon ca init (or at the next start).
		s.log.Warn("gateway certificate waits for avon ca init: the CA has no hierarchy yet", "ca", caInst)
		return nil
	}
	if err != nil {
		return fmt.Errorf("gateway certificate: %w", err)
	}
	b, _ := json.Marshal(GatewayCertificate{ID: id, Certificate: resp.Certificate, Chain: resp.Chain, Serial: resp.Serial,
		NotAfter: resp.NotAfter, IssuedAt: now.UTC()})
	if _, err := s.store.Put(ctx, gatewayCertKey, b, store.PutOptions{}); err != nil {
		return fmt.Errorf("store gateway certificate: %w", err)
	}
	s.log.Info("gateway certificate issued", "id", id, "serial", resp.Serial, "not_after", resp.NotAfter)
	return nil
}

// GatewayCertificate returns the gateway's current certificate record.
func (s *Server) GatewayCertificate(ctx context.Context) (*GatewayCertificate, error) {
	e, err := s.store.Get(ctx, gatewayCertKey)
	if err != nil {
		return nil, err
	}
	var gc GatewayCertificate
	if err := json.Unmarshal(e.Value, &gc); err != nil {
		return nil, fmt.Errorf("gateway certificate record: %w", err)
	}
	return &gc, nil
}
