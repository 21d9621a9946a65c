#!/usr/bin/env bash
# Steps 4, 5, 7, 8, 12 and 13 of the ASM 1.8 "HSM and Vault" guide done the guide's way: one
# kubectl, bao (vault) or openssl process per guide command (docs FLOW.md). mesh-bench times
# this script against `meshca apply` of the same steps on an identical sandbox.
#
# Where the guide's text cannot run as written, the closest faithful command is used and the
# reason is given beside it. Secrets never go on a command line: the Vault token is read from
# stdin, the PIN and the reviewer JWT with `@file`.
#
# Environment (mesh-bench sets every one):
#   KUBECONFIG        kubeconfig of the cluster (admin)
#   VAULT_ADDR        Vault/OpenBao address
#   VAULT_CACERT      CA certificate of the Vault server
#   VAULT_TOKEN_FILE  file holding the Vault token the operator logs in with
#   HSM_PIN_FILE      file holding the HSM partition PIN
#   CLUSTER_SUFFIX    the cluster suffix (c1)
#   REVISION          the istiod revision label (asm-183-2)
#   APP_NAMESPACE     the application namespace to label for injection
#   INGRESS_IP        the static external address of istio-ingressgateway
#   BAO               the bao (or vault) CLI; `bao` on PATH when unset
set -euo pipefail
umask 077

: "${KUBECONFIG:?}" "${VAULT_ADDR:?}" "${VAULT_CACERT:?}" "${VAULT_TOKEN_FILE:?}"
: "${HSM_PIN_FILE:?}" "${CLUSTER_SUFFIX:?}" "${REVISION:?}" "${APP_NAMESPACE:?}"
: "${INGRESS_IP:?}"
export VAULT_ADDR VAULT_CACERT

vault() { "${BAO:-bao}" "$@"; }

# A few guide commands fail harmlessly on a cluster in a given state (`kubectl delete
# configmap` before the ConfigMap exists). Accept exactly that error, fail on any other.
tolerate() {
    local expected=$1
    shift
    local out
    if ! out=$("$@" 2>&1); then
        if ! grep -q -- "$expected" <<<"$out"; then
            printf '%s\n' "$out" >&2
            return 1
        fi
    fi
    printf '%s\n' "$out"
}

# ----- step 4: Kubernetes for Vault auth ---------------------------------------------------
mkdir -p "${CLUSTER_SUFFIX}"
cd "${CLUSTER_SUFFIX}"
kubectl create ns vault
# rbac.authorization.k8s.io/v1beta1 is gone since Kubernetes 1.22: v1, otherwise the same.
kubectl apply -f - <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: role-tokenreview-binding
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:auth-delegator
subjects:
  - kind: ServiceAccount
    name: default
    namespace: vault
EOF
VAULT_SA_SECRET=$(kubectl get sa -n vault default -o=jsonpath="{.secrets[0].name}")
if [[ -n "${VAULT_SA_SECRET}" ]]; then
    VAULT_SA_JWT_TOKEN=$(kubectl get -n vault secret "${VAULT_SA_SECRET}" -o jsonpath="{.data.token}" | base64 --decode)
    kubectl get -n vault secret "${VAULT_SA_SECRET}" -o jsonpath="{.data['ca\.crt']}" | base64 --decode >"${CLUSTER_SUFFIX}-k8s_cert"
else
    # Kubernetes >= 1.24 creates no token Secret for a service account: the JWT comes from
    # the TokenRequest API and the CA from the kubeconfig, as FLOW.md prescribes.
    VAULT_SA_JWT_TOKEN=$(kubectl create token default -n vault --duration=8760h)
    kubectl config view --raw -o jsonpath="{.clusters[?(@.name == '$(kubectl config current-context)')].cluster.certificate-authority-data}" | base64 --decode >"${CLUSTER_SUFFIX}-k8s_cert"
fi
printf '%s' "${VAULT_SA_JWT_TOKEN}" >"${CLUSTER_SUFFIX}-tokenreview_jwt"
K8S_ADDR=$(kubectl config view -o jsonpath="{.clusters[?(@.name == '$(kubectl config current-context)')].cluster.server}")
echo "${K8S_ADDR}" >"${CLUSTER_SUFFIX}-k8s_addr"
# The guide's `sed` repairs undo `echo $VAR` squashing the PEM onto one line; the file above
# was written with its line breaks, so only the check remains.
openssl x509 -in "${CLUSTER_SUFFIX}-k8s_cert" -noout -text >/dev/null
cd ..

# ----- step 5: Vault for the HSM credentials -----------------------------------------------
vault login -no-print - <"${VAULT_TOKEN_FILE}"
SECRET_PATH="asm-${CLUSTER_SUFFIX}"
vault secrets enable -path="${SECRET_PATH}" kv
vault secrets tune -max-lease-ttl=87600h "${SECRET_PATH}"
HSM_SECRET_PATH="${SECRET_PATH}/hsm"
# The sandbox HSM needs no mTLS files, so only the PIN is stored (meshca does the same).
vault kv put "${HSM_SECRET_PATH}" PIN=@"${HSM_PIN_FILE}" >/dev/null
# `kv get` prints the PIN: it is run as the guide says but kept off the terminal.
vault kv get "${HSM_SECRET_PATH}" >/dev/null
vault policy write "asm-${CLUSTER_SUFFIX}-hsm-policy" - <<EOF
path "${HSM_SECRET_PATH}" {
capabilities = ["read"]
}
EOF
vault auth enable -path="${HSM_SECRET_PATH}" kubernetes
vault write "auth/${HSM_SECRET_PATH}/config" \
    token_reviewer_jwt=@"${CLUSTER_SUFFIX}/${CLUSTER_SUFFIX}-tokenreview_jwt" \
    kubernetes_host="$(cat "${CLUSTER_SUFFIX}/${CLUSTER_SUFFIX}-k8s_addr")" \
    kubernetes_ca_cert=@"${CLUSTER_SUFFIX}/${CLUSTER_SUFFIX}-k8s_cert"
vault write "auth/${HSM_SECRET_PATH}/role/istiod" \
    bound_service_account_names=istiod-service-account \
    bound_service_account_namespaces=istio-system \
    policies="asm-${CLUSTER_SUFFIX}-hsm-policy" \
    ttl=768h

# ----- step 7: control-plane resources -----------------------------------------------------
cp "${VAULT_CACERT}" ./cert
tolerate AlreadyExists kubectl create ns istio-system
tolerate NotFound kubectl delete configmap vault-tls-cert -n istio-system
kubectl create configmap vault-tls-cert -n istio-system --from-file=./cert

# ----- step 8: the validation webhook's Service --------------------------------------------
cat >istiod-service.yaml <<EOF
apiVersion: v1
kind: Service
metadata:
  name: istiod
  namespace: istio-system
  labels:
    istio.io/rev: ${REVISION}
    app: istiod
    istio: pilot
    release: istio
spec:
  ports:
    - port: 15010
      name: grpc-xds # plaintext
      protocol: TCP
    - port: 15012
      name: https-dns # mTLS with k8s-signed cert
      protocol: TCP
    - port: 443
      name: https-webhook # validation and injection
      targetPort: 15017
      protocol: TCP
    - port: 15014
      name: http-monitoring # prometheus stats
      protocol: TCP
  selector:
    app: istiod
    istio.io/rev: ${REVISION}
EOF
kubectl apply -f istiod-service.yaml

# ----- step 12: sidecar injection ----------------------------------------------------------
# The guide reads the revision from istiod's pods; the sandbox runs no istiod here, so the
# lookup is made and the known revision used.
kubectl -n istio-system get pods -l app=istiod --show-labels
kubectl label namespace "${APP_NAMESPACE}" istio-injection- istio.io/rev="${REVISION}" --overwrite
kubectl rollout restart deployment -n "${APP_NAMESPACE}"
kubectl get pods -n "${APP_NAMESPACE}" -l istio.io/rev="${REVISION}"

# ----- step 13: the ingress gateway's external IP (integrated load-balancer mode) ----------
# The guide opens `kubectl edit` to add spec.loadBalancerIP; the same change without an editor:
kubectl patch svc istio-ingressgateway -n istio-system -p "{\"spec\":{\"loadBalancerIP\":\"${INGRESS_IP}\"}}"
