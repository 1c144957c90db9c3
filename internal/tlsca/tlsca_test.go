package tlsca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func pool(ca *CA) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// TestCreateOnceThenReuse: the authority is made once, its key 0600, and the next start
// reuses it (users trust it once).
func TestCreateOnceThenReuse(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	now := time.Now()
	ca, created, err := LoadOrCreate(dir, "hearth.localhost", now)
	if err != nil || !created {
		t.Fatalf("first start: created=%v err=%v", created, err)
	}
	fi, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v, want mode 0600", fi.Mode(), err)
	}
	if di, _ := os.Stat(dir); di.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode %v, want 0700", di.Mode())
	}
	if ca.CertPath != filepath.Join(dir, CertFile) || !ca.Cert.IsCA {
		t.Fatalf("CA %s IsCA=%v", ca.CertPath, ca.Cert.IsCA)
	}
	again, created, err := LoadOrCreate(dir, "hearth.localhost", now)
	if err != nil || created {
		t.Fatalf("second start: created=%v err=%v", created, err)
	}
	if !bytes.Equal(again.Cert.Raw, ca.Cert.Raw) {
		t.Fatal("second start made a new authority")
	}
	// Its leaves verify with the first start's certificate.
	leaf, err := again.Issue("hearth.localhost", now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Leaf.Verify(x509.VerifyOptions{DNSName: "8000-abc.hearth.localhost", Roots: pool(ca)}); err != nil {
		t.Fatal(err)
	}
}

func TestLoadRefuses(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name    string
		prepare func(dir string)
		domain  string
		wantErr string
		created bool
	}{
		{name: "key readable by others", prepare: func(dir string) { os.Chmod(filepath.Join(dir, KeyFile), 0o644) },
			domain: "hearth.localhost", wantErr: "readable by others"},
		{name: "another domain", prepare: func(string) {}, domain: "other.test", wantErr: "made for hearth.localhost, localhost, not other.test"},
		{name: "key lost: a new pair", prepare: func(dir string) { os.Remove(filepath.Join(dir, KeyFile)) }, domain: "hearth.localhost", created: true},
		{name: "garbage", prepare: func(dir string) { os.WriteFile(filepath.Join(dir, CertFile), []byte("x"), 0o644) },
			domain: "hearth.localhost", wantErr: "not a certificate and its key"},
		{name: "domain with a port", prepare: func(string) {}, domain: "hearth.localhost:3002", wantErr: "no port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if _, _, err := LoadOrCreate(dir, "hearth.localhost", now); err != nil {
				t.Fatal(err)
			}
			tt.prepare(dir)
			_, created, err := LoadOrCreate(dir, tt.domain, now)
			if tt.wantErr == "" {
				if err != nil || created != tt.created {
					t.Fatalf("created=%v err=%v", created, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

// TestLeafNames: the leaf covers what the proxy routes, and nothing else verifies, not even a
// certificate the authority's own key signs for another site (the name constraints).
func TestLeafNames(t *testing.T) {
	now := time.Now()
	ca, _, err := LoadOrCreate(t.TempDir(), "hearth.localhost", now)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue("hearth.localhost", now)
	if err != nil {
		t.Fatal(err)
	}
	for name, ok := range map[string]bool{
		"8000-abc.hearth.localhost": true, "49983-x.hearth.localhost": true, "hearth.localhost": true,
		"localhost": true, "127.0.0.1": true, "a.b.hearth.localhost": false, "example.com": false,
	} {
		_, err := leaf.Leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: pool(ca), CurrentTime: now})
		if (err == nil) != ok {
			t.Errorf("%s: verify err = %v, want ok=%v", name, err, ok)
		}
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: "example.com"}, DNSNames: []string{"example.com"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	foreign, _ := x509.ParseCertificate(der)
	if _, err := foreign.Verify(x509.VerifyOptions{DNSName: "example.com", Roots: pool(ca), CurrentTime: now}); err == nil {
		t.Fatal("a certificate for example.com signed by the dev CA verifies: the name constraints do not hold")
	}
}

func TestIssuerRenews(t *testing.T) {
	now := time.Now()
	ca, _, err := LoadOrCreate(t.TempDir(), "hearth.localhost", now)
	if err != nil {
		t.Fatal(err)
	}
	is, err := NewIssuer(ca, "hearth.localhost")
	if err != nil {
		t.Fatal(err)
	}
	first, _ := is.GetCertificate(nil)
	is.now = func() time.Time { return now.Add(leafValidity / 2) }
	if c, _ := is.GetCertificate(nil); c != first {
		t.Fatal("renewed with two thirds of the lifetime left")
	}
	later := now.Add(leafValidity - leafRenewAt + time.Hour)
	is.now = func() time.Time { return later }
	c, _ := is.GetCertificate(nil)
	if c == first || !c.Leaf.NotAfter.After(later.Add(leafValidity-2*time.Hour)) {
		t.Fatalf("not renewed near the end: %v", c.Leaf.NotAfter)
	}
}

func TestFileSourceReloads(t *testing.T) {
	now := time.Now()
	dir := t.TempDir()
	ca, _, err := LoadOrCreate(filepath.Join(dir, "ca"), "sbx.test", now)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	write := func(mod time.Time) *x509.Certificate {
		leaf, err := ca.Issue("sbx.test", now)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, _ := x509.MarshalPKCS8PrivateKey(leaf.PrivateKey)
		os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Certificate[0]}), 0o644)
		os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
		os.Chtimes(certPath, mod, mod)
		os.Chtimes(keyPath, mod, mod)
		return leaf.Leaf
	}
	first := write(now.Add(-time.Hour))
	src, err := NewFileSource(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	clock := now
	src.now = func() time.Time { return clock }
	serialOf := func() string {
		c, _ := src.GetCertificate(nil)
		x, _ := x509.ParseCertificate(c.Certificate[0])
		return x.SerialNumber.String()
	}
	if serialOf() != first.SerialNumber.String() {
		t.Fatal("not the file's certificate")
	}
	second := write(now)
	if serialOf() != first.SerialNumber.String() {
		t.Fatal("reloaded within the minute")
	}
	clock = clock.Add(fileCheckEvery)
	if serialOf() != second.SerialNumber.String() {
		t.Fatal("not reloaded after the files changed")
	}
	// A broken replacement keeps the working pair in service.
	os.WriteFile(keyPath, []byte("broken"), 0o600)
	clock = clock.Add(fileCheckEvery)
	if serialOf() != second.SerialNumber.String() {
		t.Fatal("a broken key file replaced the working pair")
	}
	if _, err := NewFileSource(certPath, keyPath); err == nil {
		t.Fatal("a broken key file loads at start")
	}
}
