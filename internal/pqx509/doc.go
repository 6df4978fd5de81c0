// Package pqx509 encodes, parses, lints and verifies the X.509 structures of
// AVON's PKI with post-quantum signatures: certificates, PKCS#10 requests,
// CRLs and OCSP messages signed with ML-DSA (RFC 9881), because
// crypto/x509 can neither sign nor verify ML-DSA.
//
// # Supported
//
// Signature and key algorithms, named as the KMS names them (sdk/kms):
// ML-DSA-44/65/87 (2.16.840.1.101.3.4.3.17-19, pure, empty context),
// SLH-DSA in its twelve parameter sets (.20-.31, pure), ECDSA P-256 with
// SHA-256 and P-384 with SHA-384 (ecdsa-with-SHA256/384; keys as
// id-ecPublicKey with a named curve and an uncompressed point) and
// Ed25519. Keys are PublicKey{Algorithm, Raw}; signing goes through the
// Signer interface so private keys stay in the KMS or pqc plugin;
// verification goes through a Verifier (DefaultVerifier: internal/sigverify
// plus circl for SLH-DSA).
//
// Certificates are v3 with keyUsage, extKeyUsage, basicConstraints,
// subject/authority key identifiers, subjectAltName (DNS, IP, URI, email),
// nameConstraints (DNS and IP), authorityInfoAccess and
// cRLDistributionPoints; other extensions travel in Extensions. Verify
// builds and checks chains (signatures, validity, name chaining, cA,
// keyCertSign, pathLen, extended key usage, name constraints, host name).
// CSRs are PKCS#10 with an extensionRequest; CRLs are v2 with CRL number,
// authority key identifier and reason codes; OCSP covers requests (SHA-1
// or SHA-256 CertIDs, nonce) and basic responses (by name or by key, with
// a delegated responder certificate when it is not the issuer).
//
// # Strictness
//
// Parsers accept DER only: no indefinite or non-minimal lengths, no
// non-minimal INTEGERs, no DEFAULT values encoded (critical FALSE, cA
// FALSE, version v1), no trailing bytes anywhere. Times are UTCTime before
// 2050 and GeneralizedTime from 2050, both YYMMDDHHMMSSZ / YYYYMMDDHHMMSSZ
// exactly. Serials are positive and at most 20 octets. Signature algorithm
// parameters must be absent, and the outer algorithm must equal the one in
// the signed part. Duplicate extensions and unknown critical extensions are
// refused. Every error is a *ParseError or wraps one of the Err sentinels.
// CreateCertificate runs Lint on what it is about to sign, refuses a TBS
// with any finding (*LintError), and verifies its own signature before it
// returns.
//
// # Deliberately not supported
//
// RSA except as a subject key (2048, 3072 or 4096 bits) and the
// PKCS#1 v1.5 SHA-2 signature of a CSR made with such a key (nothing here
// signs with RSA), DSA, SHA-1 signatures (SHA-1 appears only in OCSP CertIDs and key
// hashes, where RFC 6960 needs it), ML-DSA or SLH-DSA pre-hash variants and
// contexts, certificate policies and policy mappings (a critical one is
// refused), name constraints on other name forms, v1/v2 certificates, CRL
// delta and indirect CRLs, OCSP request signatures (exposed, not checked).
//
// # Users
//
// The CA plugin (plugins/ca-dilithium) implements Signer over its KMS key,
// parses requests with ParseCSR, refuses RequestsCA and unknown critical
// requested extensions, issues with CreateCertificate, and publishes
// CreateCRL and CreateOCSPResponse output. The agent makes its enrollment
// request with CreateCSR over its own key and checks the returned chain
// with Verify. The gateway verifies peer chains with Verify against the
// AVON roots at its calibrated time and checks status with
// ParseOCSPResponse and CheckSignatureFrom.
//
// The package does no I/O and reads no clock: time comes in through
// templates and VerifyOptions.
package pqx509
