package process

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/basalt-storage/basalt/events"
)

// writeCert makes a certificate for 127.0.0.1 signed by parent (self-signed when parent is nil)
// and writes it and its key as PEM files in dir; it returns the certificate and key.
func writeCert(t *testing.T, dir, name string, ca bool, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, IsCA: ca, BasicConstraintsValid: true}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(filepath.Join(dir, name+".crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(filepath.Join(dir, name+".key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	return cert, key
}

// TestRedisOverTLS runs a real redis-server that speaks TLS only and asks clients for a
// certificate: with the CA and the client certificate configured, every Redis call of Basalt
// works (a plain call and the bus); without the CA the server is not trusted, and without the
// client certificate the server refuses the client.
func TestRedisOverTLS(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server not installed")
	}
	dir := t.TempDir()
	ca, caKey := writeCert(t, dir, "ca", true, nil, nil)
	writeCert(t, dir, "server", false, ca, caKey)
	writeCert(t, dir, "client", false, ca, caKey)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	srv := exec.Command("redis-server", "--port", "0", "--tls-port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--tls-cert-file", filepath.Join(dir, "server.crt"), "--tls-key-file", filepath.Join(dir, "server.key"),
		"--tls-ca-cert-file", filepath.Join(dir, "ca.crt"), "--tls-auth-clients", "yes", "--save", "", "--dir", dir)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })

	url := "rediss://127.0.0.1:" + strconv.Itoa(port) + "/0"
	connect := func(ca, cert, key string) error {
		c := Config{RedisURL: url, RedisTimeout: time.Second, RedisCAFile: ca, RedisCertFile: cert, RedisKeyFile: key}
		opts, err := c.RedisOptions()
		if err != nil {
			return err
		}
		rdb := events.NewRedisClient(opts)
		defer rdb.Close()
		ctx := context.Background()
		if err := rdb.Set(ctx, "k", "v", 0).Err(); err != nil {
			return err
		}
		if v, err := rdb.Get(ctx, "k").Result(); err != nil || v != "v" {
			t.Errorf("GET over TLS = %q, %v", v, err)
		}
		return nil
	}
	caFile, certFile, keyFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := connect(caFile, certFile, keyFile)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Redis over TLS with the CA and a client certificate: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := connect("", certFile, keyFile); err == nil {
		t.Error("a server certificate from an unknown CA was trusted")
	}
	if err := connect(caFile, "", ""); err == nil {
		t.Error("the server accepted a client without a certificate")
	}
	// The bus speaks TLS too.
	c := Config{RedisURL: url, RedisTimeout: time.Second, RedisCAFile: caFile, RedisCertFile: certFile, RedisKeyFile: keyFile}
	c.setDefaults()
	opts, err := c.RedisOptions()
	if err != nil {
		t.Fatal(err)
	}
	bus, err := c.Bus(opts, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	if err := bus.Publish("basalt.tls-check", "op-1", "req-1", map[string]string{"x": "y"}); err != nil {
		t.Errorf("publish over TLS: %v", err)
	}
	// A CA for a URL that asked for no TLS is a configuration mistake.
	plain := Config{RedisURL: "redis://127.0.0.1:6379/0", RedisCAFile: caFile}
	if _, err := plain.RedisOptions(); err == nil {
		t.Error("BASALT_REDIS_CA_FILE with a redis:// URL was accepted")
	}
}
