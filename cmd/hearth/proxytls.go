package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/pflag"

	"github.com/hearthsh/hearth/internal/tlsca"
)

// proxyTLSConfig is how the sandbox proxy serves HTTPS (hearth dev and hearth server).
type proxyTLSConfig struct {
	// On serves HTTPS on the proxy port, next to plain HTTP.
	On bool
	// CertFile and KeyFile are the operator's certificate for *.<domain>; without them a
	// certificate authority generated in DATA-DIR/tls/<domain>/ signs one.
	CertFile, KeyFile string
	// AddPort: a --domain without a port is told to the SDKs with the proxy's port
	// (hearth dev, where nothing sits in front of the proxy).
	AddPort bool
}

func (t *proxyTLSConfig) flags(f *pflag.FlagSet, defaultOn bool) {
	usage := "serve HTTPS on the proxy port too (one port, TLS told apart by its first byte), with --tls-cert/--tls-key or else a certificate authority generated once in DATA-DIR/tls/<domain>/"
	f.BoolVar(&t.On, "tls", defaultOn, usage)
	f.StringVar(&t.CertFile, "tls-cert", "", "PEM certificate (chain) for *.<domain> the proxy serves HTTPS with; reloaded when the file changes (implies --tls)")
	f.StringVar(&t.KeyFile, "tls-key", "", "PEM private key of --tls-cert")
}

// proxyTLS is what runControlPlane serves HTTPS with, and what the banner says about it.
type proxyTLS struct {
	config *tls.Config
	// CA is the generated authority users trust; nil with the operator's certificate.
	CA        *tlsca.CA
	CreatedCA bool
}

// setupProxyTLS returns nil when the proxy serves plain HTTP only.
func setupProxyTLS(t proxyTLSConfig, dataDir, domain string) (*proxyTLS, error) {
	if (t.CertFile == "") != (t.KeyFile == "") {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	if t.CertFile != "" {
		src, err := tlsca.NewFileSource(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, err
		}
		return &proxyTLS{config: tlsca.ServerConfig(src)}, nil
	}
	if !t.On {
		return nil, nil
	}
	host := domainHost(domain)
	if host == "" {
		return nil, errors.New("--tls without --tls-cert needs --domain: the generated certificate is for *.<domain>")
	}
	ca, created, err := tlsca.LoadOrCreate(filepath.Join(dataDir, "tls", host), host, time.Now())
	if err != nil {
		return nil, err
	}
	issuer, err := tlsca.NewIssuer(ca, host)
	if err != nil {
		return nil, err
	}
	return &proxyTLS{config: tlsca.ServerConfig(issuer), CA: ca, CreatedCA: created}, nil
}

// domainHost is --domain without a port.
func domainHost(d string) string {
	if h, _, err := net.SplitHostPort(d); err == nil {
		return h
	}
	return d
}

// sdkDomain is the domain the SDKs are told. They build https://PORT-ID.<domain> with no
// port of their own, so a port the proxy listens on travels in the domain
// ("hearth.localhost:3002"); 443 needs none.
func sdkDomain(domain string, addPort bool, proxy net.Addr) string {
	if domain == "" || !addPort || domainHost(domain) != domain {
		return domain
	}
	_, port, err := net.SplitHostPort(proxy.String())
	if err != nil || port == strconv.Itoa(443) {
		return domain
	}
	return domain + ":" + port
}

// tlsBanner tells a dev user how to reach sandbox ports over HTTPS.
func tlsBanner(t *proxyTLS, domain string) string {
	if t == nil || domain == "" {
		return ""
	}
	s := fmt.Sprintf("Sandbox ports over HTTPS: https://PORT-ID.%s/ (sbx.getHost(port)); plain HTTP on the same port.\n", domain)
	if t.CA == nil {
		return s
	}
	if t.CreatedCA {
		s += "A certificate authority for it was just created; trust it once:\n"
	} else {
		s += "Its certificates are signed by Hearth's dev certificate authority; trust it once:\n"
	}
	return s + fmt.Sprintf(`  Node:     export NODE_EXTRA_CA_CERTS=%[1]s
  curl:     curl --cacert %[1]s ...
  browsers: import %[1]s as a certificate authority
            (it can sign only for %[2]s, localhost and loopback addresses)
`, t.CA.CertPath, domainHost(domain))
}
