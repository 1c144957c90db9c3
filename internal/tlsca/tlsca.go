// Package tlsca provides the certificates the sandbox proxy serves HTTPS with: a local
// certificate authority that `hearth dev` generates once and keeps in its data directory,
// leaf certificates for "*.<domain>" that it signs, and certificate files an operator
// supplies (reloaded when they change, as renewals replace them).
//
// The generated authority is name-constrained to its domain, localhost and loopback
// addresses: a user trusts it in a browser or in NODE_EXTRA_CA_CERTS, and its key, should it
// leak, cannot mint a certificate for any other site.
package tlsca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hearthsh/hearth/internal/durable"
)

// Files of an authority in its directory.
const (
	CertFile = "ca.pem"
	KeyFile  = "ca-key.pem"
)

const (
	caValidity = 10 * 365 * 24 * time.Hour
	// Leaves are short-lived and never stored: a process issues one at start and a new one
	// when a third of its lifetime is left.
	leafValidity = 90 * 24 * time.Hour
	leafRenewAt  = leafValidity / 3
	// Certificates are valid from a little before now, for clocks slightly behind.
	backdate = time.Hour
)

// CA is a certificate authority whose key is on this machine.
type CA struct {
	Cert *x509.Certificate
	key  crypto.Signer
	// CertPath is the PEM file to trust.
	CertPath string
}

// LoadOrCreate returns the authority kept in dir for domain, creating it (and dir, 0700)
// when there is none. created reports a new authority, which users must trust before
// clients accept the proxy's certificates. An authority whose key file others can read is
// refused, and so is one that does not cover domain.
func LoadOrCreate(dir, domain string, now time.Time) (ca *CA, created bool, err error) {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	if err := validDomain(domain); err != nil {
		return nil, false, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("certificate authority dir: %w", err)
	}
	certPath, keyPath := filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)
	ca, err = load(certPath, keyPath)
	switch {
	case err == nil:
		if err := ca.covers(domain, now); err != nil {
			return nil, false, fmt.Errorf("certificate authority %s: %w", certPath, err)
		}
		return ca, false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, false, fmt.Errorf("certificate authority %s: %w", certPath, err)
	}
	// One file without the other is an interrupted creation, or a lost key: a new pair either way.
	ca, err = create(certPath, keyPath, domain, now)
	if err != nil {
		return nil, false, fmt.Errorf("create certificate authority in %s: %w", dir, err)
	}
	return ca, true, nil
}

func validDomain(d string) error {
	if d == "" || strings.ContainsAny(d, ":/* ") || net.ParseIP(d) != nil {
		return fmt.Errorf("sandbox domain %q must be a DNS name such as hearth.localhost (no port, scheme or wildcard)", d)
	}
	return nil
}

func load(certPath, keyPath string) (*CA, error) {
	keyInfo, err := os.Stat(keyPath)
	if err != nil {
		return nil, err
	}
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, err
	}
	if keyInfo.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s is readable by others (mode %04o): chmod 600 it, or delete both files to make a new authority", keyPath, keyInfo.Mode().Perm())
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s and %s are not a certificate and its key: %w", certPath, keyPath, err)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok || !pair.Leaf.IsCA {
		return nil, fmt.Errorf("%s is not a certificate authority", certPath)
	}
	return &CA{Cert: pair.Leaf, key: signer, CertPath: certPath}, nil
}

// covers reports why the authority cannot issue for domain now, if it cannot.
func (ca *CA) covers(domain string, now time.Time) error {
	if now.After(ca.Cert.NotAfter) {
		return fmt.Errorf("expired on %s: delete it and restart to make a new one", ca.Cert.NotAfter.Format(time.DateOnly))
	}
	for _, d := range ca.Cert.PermittedDNSDomains {
		if d == domain {
			return nil
		}
	}
	return fmt.Errorf("made for %s, not %s", strings.Join(ca.Cert.PermittedDNSDomains, ", "), domain)
}

func create(certPath, keyPath, domain string, now time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject: pkix.Name{
			Organization: []string{"Hearth development CA"},
			CommonName:   fmt.Sprintf("Hearth %s CA (%s)", domain, host),
		},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		// What it may sign for: the sandbox domain and its subdomains, localhost, loopback.
		PermittedDNSDomainsCritical: true,
		PermittedDNSDomains:         []string{domain, "localhost"},
		PermittedIPRanges: []*net.IPNet{
			{IP: net.IPv4(127, 0, 0, 0).To4(), Mask: net.CIDRMask(8, 32)},
			{IP: net.IPv6loopback, Mask: net.CIDRMask(128, 128)},
		},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	// The key first: a certificate on disk always has its key.
	if err := durable.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, err
	}
	if err := durable.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, err
	}
	return &CA{Cert: cert, key: key, CertPath: certPath}, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}

// Issue signs a leaf certificate for domain, its subdomains' wildcard, localhost and the
// loopback addresses, valid from now for leafValidity.
func (ca *CA) Issue(domain string, now time.Time) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{Organization: []string{"Hearth"}, CommonName: "*." + domain},
		NotBefore:    now.Add(-backdate),
		NotAfter:     now.Add(leafValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"*." + domain, domain, "localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.key)
	if err != nil {
		return nil, fmt.Errorf("issue certificate for *.%s: %w", domain, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der, ca.Cert.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// Source hands out the certificate to serve, for tls.Config.GetCertificate.
type Source interface {
	GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error)
}

// Issuer serves leaves from a CA, issuing a new one before the current one runs out.
type Issuer struct {
	ca     *CA
	domain string
	now    func() time.Time

	mu  sync.Mutex
	cur *tls.Certificate
}

// NewIssuer issues the first leaf at once, so that a broken authority fails at start.
func NewIssuer(ca *CA, domain string) (*Issuer, error) {
	is := &Issuer{ca: ca, domain: strings.ToLower(domain), now: time.Now}
	if _, err := is.GetCertificate(nil); err != nil {
		return nil, err
	}
	return is, nil
}

// GetCertificate serves the same leaf whatever the client's server name: it covers every
// name the proxy routes, and a client asking for another name rejects it, as it should.
func (is *Issuer) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	is.mu.Lock()
	defer is.mu.Unlock()
	now := is.now()
	if is.cur == nil || now.After(is.cur.Leaf.NotAfter.Add(-leafRenewAt)) {
		c, err := is.ca.Issue(is.domain, now)
		if err != nil {
			return nil, err
		}
		is.cur = c
	}
	return is.cur, nil
}

// fileCheckEvery is how often FileSource looks whether the files changed.
const fileCheckEvery = time.Minute

// FileSource serves a certificate and key from PEM files (a chain in the certificate file,
// leaf first), reloading them when their modification times change.
type FileSource struct {
	certPath, keyPath string
	now               func() time.Time

	mu        sync.Mutex
	cur       *tls.Certificate
	certMod   time.Time
	keyMod    time.Time
	checkedAt time.Time
}

// NewFileSource loads the files once, so that bad ones fail at start.
func NewFileSource(certPath, keyPath string) (*FileSource, error) {
	s := &FileSource{certPath: certPath, keyPath: keyPath, now: time.Now}
	if err := s.reload(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *FileSource) reload() error {
	ci, err := os.Stat(s.certPath)
	if err != nil {
		return fmt.Errorf("TLS certificate: %w", err)
	}
	ki, err := os.Stat(s.keyPath)
	if err != nil {
		return fmt.Errorf("TLS key: %w", err)
	}
	pair, err := tls.LoadX509KeyPair(s.certPath, s.keyPath)
	if err != nil {
		return fmt.Errorf("TLS certificate %s and key %s: %w", s.certPath, s.keyPath, err)
	}
	s.cur, s.certMod, s.keyMod = &pair, ci.ModTime(), ki.ModTime()
	return nil
}

// GetCertificate returns the loaded pair, reloading it at most once a minute when a file
// changed; a pair that fails to load keeps the previous one in service.
func (s *FileSource) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now := s.now(); now.Sub(s.checkedAt) >= fileCheckEvery {
		s.checkedAt = now
		ci, cerr := os.Stat(s.certPath)
		ki, kerr := os.Stat(s.keyPath)
		if cerr == nil && kerr == nil && (!ci.ModTime().Equal(s.certMod) || !ki.ModTime().Equal(s.keyMod)) {
			_ = s.reload() // on failure the previous pair stays, and the next check retries
		}
	}
	return s.cur, nil
}

// ServerConfig is the proxy's TLS configuration: TLS 1.2 and later, and HTTP/1.1 only,
// like every hop of the proxy (WebSockets and Connect streams need it).
func ServerConfig(src Source) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"http/1.1"},
		GetCertificate: src.GetCertificate,
	}
}
