// Independent check of pqx509 output: walks the DER itself (no ASN.1
// library) and verifies ML-DSA signatures with @noble/post-quantum.
//
// Usage: node verify.mjs manifest.json
// The manifest lists items {name, kind, file, issuer}: kind is "cert",
// "csr", "crl" or "ocsp"; file the DER to check; issuer the DER
// certificate whose key signed it (absent for a CSR, which carries its
// own key). For each item the script prints one JSON line
// {name, alg, valid, tamperedValid}: tamperedValid is the result for the
// same signature over the signed bytes with one bit flipped.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { ml_dsa44, ml_dsa65, ml_dsa87 } from '@noble/post-quantum/ml-dsa.js';

// readTLV reads one DER element at off: tag, header length, content length.
function readTLV(buf, off) {
  if (off + 2 > buf.length) throw new Error(`truncated at ${off}`);
  const tag = buf[off];
  if ((tag & 0x1f) === 0x1f) throw new Error('high tag number');
  let len = buf[off + 1];
  let hdr = 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4) throw new Error('indefinite or huge length');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[off + 2 + i];
    hdr += n;
  }
  const end = off + hdr + len;
  if (end > buf.length) throw new Error(`element at ${off} overruns`);
  return { tag, off, hdr, len, start: off + hdr, end };
}

// children lists the elements inside a constructed element.
function children(buf, el) {
  const out = [];
  for (let p = el.start; p < el.end; ) {
    const c = readTLV(buf, p);
    out.push(c);
    p = c.end;
  }
  return out;
}

const bytes = (buf, el) => buf.subarray(el.off, el.end);
const content = (buf, el) => buf.subarray(el.start, el.end);

// ML-DSA OIDs 2.16.840.1.101.3.4.3.17/18/19: the DER content ends in 0x11-0x13.
const OID_PREFIX = [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03];
const ALGS = { 0x11: ['ML-DSA-44', ml_dsa44], 0x12: ['ML-DSA-65', ml_dsa65], 0x13: ['ML-DSA-87', ml_dsa87] };

function algOf(buf, algIdEl) {
  const [oid, ...params] = children(buf, algIdEl);
  const c = content(buf, oid);
  if (oid.tag !== 0x06 || c.length !== 9 || OID_PREFIX.some((b, i) => c[i] !== b) || !ALGS[c[8]]) {
    throw new Error('not an ML-DSA algorithm identifier');
  }
  if (params.length !== 0) throw new Error('ML-DSA parameters must be absent');
  return ALGS[c[8]];
}

function bitString(buf, el) {
  if (el.tag !== 0x03 || buf[el.start] !== 0) throw new Error('not a BIT STRING without unused bits');
  return buf.subarray(el.start + 1, el.end);
}

// spkiKey returns [algName, key] from a SubjectPublicKeyInfo element.
function spkiKey(buf, spkiEl) {
  const [algId, bits] = children(buf, spkiEl);
  return [algOf(buf, algId)[0], bitString(buf, bits)];
}

// certKey returns the subject key of a DER certificate.
function certKey(der) {
  const [tbs] = children(der, readTLV(der, 0));
  const f = children(der, tbs);
  const i = f[0].tag === 0xa0 ? 1 : 0; // version [0]
  return spkiKey(der, f[i + 5]); // serial, signature, issuer, validity, subject, spki
}

// signedParts returns {tbs, algId, sig} and, for a CSR, the request's key.
function signedParts(kind, der) {
  let outer = readTLV(der, 0);
  if (kind === 'ocsp') {
    const [status, rb] = children(der, outer);
    if (status.tag !== 0x0a || der[status.start] !== 0) throw new Error('OCSP status not successful');
    const [rbSeq] = children(der, rb);
    const [, octets] = children(der, rbSeq);
    outer = readTLV(der, octets.start);
  }
  const [tbs, algId, sig] = children(der, outer);
  const parts = { tbs: bytes(der, tbs), algId, sig: bitString(der, sig) };
  if (kind === 'csr') {
    const f = children(der, tbs); // version, subject, spki, attributes
    parts.key = spkiKey(der, f[2]);
  }
  return parts;
}

function check(item, base) {
  const der = readFileSync(join(base, item.file));
  const p = signedParts(item.kind, der);
  const [alg, impl] = algOf(der, p.algId);
  const [keyAlg, key] = item.kind === 'csr' ? p.key : certKey(readFileSync(join(base, item.issuer)));
  if (keyAlg !== alg) return { name: item.name, alg, valid: false, tamperedValid: false, error: `${alg} signature, ${keyAlg} key` };
  const valid = impl.verify(p.sig, p.tbs, key);
  const tampered = Uint8Array.from(p.tbs);
  tampered[tampered.length >> 1] ^= 0x01;
  const tamperedValid = impl.verify(p.sig, tampered, key);
  return { name: item.name, alg, valid, tamperedValid };
}

const manifestPath = process.argv[2];
const manifest = JSON.parse(readFileSync(manifestPath, 'utf8'));
const base = dirname(manifestPath);
for (const item of manifest) {
  let r;
  try {
    r = check(item, base);
  } catch (e) {
    r = { name: item.name, valid: false, tamperedValid: false, error: String(e.message || e) };
  }
  console.log(JSON.stringify(r));
}
