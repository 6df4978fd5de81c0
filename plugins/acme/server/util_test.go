package server_test

import (
	"crypto/sha256"
	"encoding/asn1"
	"math/big"
)

func sha256Sum(b []byte) []byte { s := sha256.Sum256(b); return s[:] }

func asn1Marshal(b []byte) ([]byte, error) { return asn1.Marshal(b) }

func bigOne() *big.Int { return big.NewInt(1) }
