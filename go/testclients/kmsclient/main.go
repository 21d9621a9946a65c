// Command kmsclient drives hsm-plugin with grpc-go and its DEFAULT :authority, the way the
// Thales client and istiod's neighbours dial it (grpc target "unix:<path>" or
// "unix://<abs path>", or with --dialer the bare socket path and a custom dialer, as the
// Kubernetes KMS client does): grpc.health.v1 Check, the istiod sequence of the Istio v1 service
// (GenerateDEK, GenerateSKey, LoadSKey, AuthenticatedEncrypt, AuthenticatedDecrypt) and
// Kubernetes KMS v2 Status/Encrypt/Decrypt. It prints one JSON line per call and exits 1 on
// the first failure, printing the gRPC code and message.
//
// The Istio and KMS v2 messages are encoded with protowire from the field numbers of
// crates/kms-grpc/proto, so no protoc run is needed.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

const (
	istioService = "/thalescpl.io.ekms.istio.v1.KeyManagementService/"
	v2Service    = "/v2.KeyManagementService/"
	keyKindRSA   = 2
)

func report(call string, fields map[string]any) {
	if fields == nil {
		fields = map[string]any{}
	}
	fields["call"] = call
	line, err := json.Marshal(fields)
	if err != nil {
		panic(err)
	}
	fmt.Println(string(line))
}

func fail(call string, err error) {
	st, _ := status.FromError(err)
	report("error", map[string]any{"during": call, "code": st.Code().String(), "details": st.Message()})
	os.Exit(1)
}

func main() {
	target := flag.String("target", "unix:/tmp/run/hsm-plugin-server.sock", "gRPC target")
	kek := flag.String("kek", "", "KEK id")
	dialer := flag.Bool("dialer", false, "treat --target as a socket path and dial it with a custom unix dialer "+
		"(the Kubernetes KMS client and older Thales clients; grpc-go then sends the path as :authority)")
	flag.Parse()

	// grpc.Dial and WithInsecure as the Thales client calls them (they build against
	// both the current and the ASM 1.8 era grpc-go, see asm18.mod).
	opts := []grpc.DialOption{grpc.WithInsecure()}
	if *dialer {
		opts = append(opts, grpc.WithContextDialer(func(ctx context.Context, path string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}))
	}
	conn, err := grpc.Dial(*target, opts...)
	if err != nil {
		fail("dial", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	health, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		fail("Check", err)
	}
	report("Check", map[string]any{"status": int32(health.GetStatus())})

	call := func(method string, req message) fields {
		var resp []byte
		if err := conn.Invoke(ctx, method, []byte(req), &resp, grpc.ForceCodec(rawCodec{})); err != nil {
			fail(method, err)
		}
		out, err := parse(resp)
		if err != nil {
			fail(method, err)
		}
		return out
	}

	k := []byte(*kek)
	dek := call(istioService+"GenerateDEK", message{}.bytes(1, k)).get(1)
	report("GenerateDEK", map[string]any{"bytes": len(dek)})
	skey := call(istioService+"GenerateSKey", message{}.varint(1, 2048).varint(2, keyKindRSA).bytes(4, k).bytes(5, dek)).get(1)
	report("GenerateSKey", map[string]any{"bytes": len(skey)})
	pem := call(istioService+"LoadSKey", message{}.bytes(1, k).bytes(2, dek).bytes(3, skey)).get(1)
	report("LoadSKey", map[string]any{"rsa_pem": bytes.HasPrefix(pem, []byte("-----BEGIN RSA PRIVATE KEY-----"))})
	csr := []byte("-----BEGIN CERTIFICATE REQUEST-----\ngo\n-----END CERTIFICATE REQUEST-----\n")
	aad := []byte("csr-go")
	ct := call(istioService+"AuthenticatedEncrypt", message{}.bytes(1, k).bytes(2, dek).bytes(3, csr).bytes(4, aad)).get(1)
	report("AuthenticatedEncrypt", map[string]any{"bytes": len(ct)})
	pt := call(istioService+"AuthenticatedDecrypt", message{}.bytes(1, k).bytes(2, dek).bytes(3, ct).bytes(4, aad)).get(1)
	report("AuthenticatedDecrypt", map[string]any{"round_trip": bytes.Equal(pt, csr)})

	st := call(v2Service+"Status", message{})
	report("Status", map[string]any{"version": string(st.get(1)), "healthz": string(st.get(2)), "key_id": string(st.get(3))})
	plain := []byte("apiserver-dek")
	enc := call(v2Service+"Encrypt", message{}.bytes(1, plain).bytes(2, []byte("go-1")))
	dreq := message{}.bytes(1, enc.get(1)).bytes(2, []byte("go-2")).bytes(3, enc.get(2))
	for _, entry := range enc[3] {
		dreq = dreq.bytes(4, entry) // map entries are passed back as they came
	}
	dec := call(v2Service+"Decrypt", dreq)
	report("Encrypt+Decrypt", map[string]any{"round_trip": bytes.Equal(dec.get(1), plain), "key_id": string(enc.get(2))})
}
