//! The emulated cluster's state: objects, resource versions, watch events, authentication,
//! authorization, and the write pipeline every create, update, patch and apply goes through.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::kinds::{self, Ctx};
use super::managed::{self, Entry};
use super::resources::{RESOURCES, ResourceType, find_kind};
use super::status::{ApiError, Cause};
use super::tokens::{LEGACY_ISSUER, Signer, Verified};

/// Where an object lives: (resource type index, namespace or "", name).
pub(crate) type Key = (usize, String, String);

/// How many past events a watch can resume from.
const EVENT_LOG: usize = 2048;
/// How many requests [`Cluster::requests`] remembers.
pub(crate) const REQUEST_LOG: usize = 4096;

/// A change, as watches stream it.
#[derive(Debug)]
pub(crate) struct Event {
    pub(crate) rt: usize,
    pub(crate) namespace: String,
    pub(crate) rv: u64,
    pub(crate) kind: &'static str,
    pub(crate) object: Value,
}

/// One request the emulator answered, for tests that pin what a client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// The raw query string.
    pub query: String,
    /// `Content-Type` of the request, if any.
    pub content_type: Option<String>,
    /// The authenticated user (`""` when unauthenticated).
    pub user: String,
    /// The answer's status code.
    pub status: u16,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub(crate) name: String,
    pub(crate) uid: String,
    pub(crate) groups: Vec<String>,
}

/// How unknown fields are treated (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Validation {
    Strict,
    Warn,
    Ignore,
}

/// Options of one write.
#[derive(Debug)]
pub(crate) struct WriteOpts<'a> {
    pub(crate) dry_run: bool,
    pub(crate) manager: String,
    pub(crate) validation: Validation,
    pub(crate) user: &'a User,
    pub(crate) subresource: Option<&'a str>,
}

/// Who takes ownership of the written fields.
#[derive(Debug)]
pub(crate) enum Ownership {
    /// An `Update` manager (create, update, non-apply patches).
    Update,
    /// An `Apply` manager owning exactly this field set.
    Apply(Vec<Vec<String>>),
    /// A controller of the emulator: no manager.
    System,
}

/// The outcome of a write.
#[derive(Debug)]
pub(crate) struct Written {
    pub(crate) object: Value,
    pub(crate) warnings: Vec<String>,
}

pub(crate) struct State {
    pub(crate) objects: BTreeMap<Key, Value>,
    pub(crate) rv: u64,
    pub(crate) log: VecDeque<Arc<Event>>,
    pub(crate) denials: Vec<(String, String)>,
    pub(crate) requests: VecDeque<RecordedRequest>,
    /// Status codes the next requests answer with, whatever they ask.
    pub(crate) faults: VecDeque<u16>,
}

pub(crate) struct Shared {
    pub(crate) state: Mutex<State>,
    pub(crate) events: broadcast::Sender<Arc<Event>>,
    pub(crate) signer: Signer,
    pub(crate) issuer: String,
    pub(crate) api_audiences: Vec<String>,
    pub(crate) admin_token: SecretString,
    pub(crate) sidecar_injection: bool,
    pub(crate) ca_pem: String,
    pub(crate) server_url: Mutex<String>,
}

/// The state of an emulated cluster: a handle to read and seed objects, issue tokens, and
/// configure denials. Cheap to clone; every clone sees the same cluster.
#[derive(Clone)]
pub struct Cluster {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("issuer", &self.shared.issuer)
            .finish_non_exhaustive()
    }
}

/// Now, as a second-precision RFC 3339 timestamp.
pub(crate) fn now_rfc3339() -> String {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

pub(crate) fn now_seconds() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn rfc3339_of(seconds: i64) -> String {
    jiff::Timestamp::from_second(seconds)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

const HASH_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn safe_suffix(len: usize) -> String {
    use rand::Rng as _;
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(HASH_ALPHABET[rng.random_range(0..HASH_ALPHABET.len())]))
        .collect()
}

fn template_hash(template: &Value) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, template.to_string().as_bytes());
    digest.as_ref()[..10]
        .iter()
        .map(|b| char::from(HASH_ALPHABET[usize::from(*b) % HASH_ALPHABET.len()]))
        .collect()
}

fn idx(plural: &str) -> usize {
    RESOURCES
        .iter()
        .position(|r| r.plural == plural)
        .unwrap_or_default()
}

impl State {
    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    pub(crate) fn get(&self, rt: usize, ns: &str, name: &str) -> Option<&Value> {
        self.objects.get(&(rt, ns.to_owned(), name.to_owned()))
    }

    /// Objects of a type in a namespace (`None`: every namespace).
    pub(crate) fn list(&self, rt: usize, ns: Option<&str>) -> Vec<&Value> {
        self.objects
            .range((rt, String::new(), String::new())..)
            .take_while(|((r, _, _), _)| *r == rt)
            .filter(|((_, n, _), _)| ns.is_none_or(|ns| ns == n))
            .map(|(_, v)| v)
            .collect()
    }
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn emit(
        &self,
        st: &mut State,
        rt: usize,
        ns: &str,
        rv: u64,
        kind: &'static str,
        object: Value,
    ) {
        let ev = Arc::new(Event {
            rt,
            namespace: ns.to_owned(),
            rv,
            kind,
            object,
        });
        st.log.push_back(Arc::clone(&ev));
        while st.log.len() > EVENT_LOG {
            st.log.pop_front();
        }
        let _ = self.events.send(ev);
    }

    fn ctx<'a>(st: &'a State, user: &'a User) -> Ctx<'a> {
        let services = st.list(idx("services"), None);
        let cluster_ips = services
            .iter()
            .filter_map(|s| s["spec"]["clusterIP"].as_str().map(str::to_owned))
            .collect();
        let node_ports: BTreeSet<i64> = services
            .iter()
            .filter_map(|s| s["spec"]["ports"].as_array())
            .flatten()
            .filter_map(|p| p["nodePort"].as_i64())
            .collect();
        let node_name = st
            .list(idx("nodes"), None)
            .first()
            .and_then(|n| n["metadata"]["name"].as_str())
            .unwrap_or("sandbox-node-1");
        Ctx {
            cluster_ips,
            node_ports,
            node_name,
            user: (&user.name, &user.uid, &user.groups),
        }
    }

    /// Every write ends here: identity metadata, defaulting, validation, ownership, no-op
    /// detection, storage, events and controllers.
    #[allow(
        clippy::too_many_lines,
        clippy::too_many_arguments,
        reason = "one linear pipeline reads best in one place"
    )]
    pub(crate) fn commit(
        &self,
        st: &mut State,
        rt_idx: usize,
        ns: &str,
        old: Option<&Value>,
        mut obj: Value,
        opts: &WriteOpts<'_>,
        ownership: Ownership,
    ) -> Result<Written, ApiError> {
        let rt = &RESOURCES[rt_idx];
        if !obj.is_object() {
            return Err(ApiError::bad_request("the request body must be an object"));
        }
        kinds::check_shapes(rt.kind, &obj)?;
        let mut warnings = Vec::new();
        let unknown = kinds::prune_unknown(rt.kind, &mut obj);
        if !unknown.is_empty() {
            match opts.validation {
                Validation::Strict => {
                    let list: Vec<String> = unknown
                        .iter()
                        .map(|u| format!("unknown field \"{u}\""))
                        .collect();
                    return Err(ApiError::bad_request(format!(
                        "strict decoding error: {}",
                        list.join(", ")
                    )));
                }
                Validation::Warn => {
                    warnings.extend(unknown.iter().map(|u| format!("unknown field \"{u}\"")));
                }
                Validation::Ignore => {}
            }
        }
        obj["apiVersion"] = json!(rt.group_version());
        obj["kind"] = json!(rt.kind);
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if rt.namespaced {
            obj["metadata"]["namespace"] = json!(ns);
        } else if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        let now = now_rfc3339();
        if let Some(old) = old {
            let old_meta = &old["metadata"];
            if let Some(uid) = obj["metadata"]["uid"].as_str()
                && !uid.is_empty()
                && Some(uid) != old_meta["uid"].as_str()
            {
                return Err(ApiError::conflict(
                    rt,
                    &name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        old_meta["uid"].as_str().unwrap_or_default()
                    ),
                ));
            }
            if let Some(rv) = obj["metadata"]["resourceVersion"].as_str()
                && !rv.is_empty()
                && Some(rv) != old_meta["resourceVersion"].as_str()
            {
                return Err(ApiError::modified(rt, &name));
            }
            for k in [
                "uid",
                "creationTimestamp",
                "generation",
                "deletionTimestamp",
            ] {
                match old_meta.get(k) {
                    Some(v) => obj["metadata"][k] = v.clone(),
                    None => {
                        if let Some(m) = obj["metadata"].as_object_mut() {
                            m.remove(k);
                        }
                    }
                }
            }
            if matches!(opts.subresource, Some("status" | "approval")) {
                let status = obj["status"].clone();
                let mut base = old.clone();
                base["status"] = status;
                if opts.subresource == Some("approval") {
                    base["status"] = obj["status"].clone();
                }
                obj = base;
            } else {
                kinds::keep_status(rt.kind, old, &mut obj);
            }
        } else {
            if let Some(cause) = kinds::validate_name(rt, &name) {
                return Err(ApiError::invalid(rt, &name, &[cause]));
            }
            let meta = &mut obj["metadata"];
            meta["uid"] = json!(uuid::Uuid::new_v4().to_string());
            meta["creationTimestamp"] = json!(now);
            if let Some(m) = meta.as_object_mut() {
                m.remove("resourceVersion");
                m.remove("generation");
                m.remove("deletionTimestamp");
            }
            if rt.kind == "Deployment" {
                obj["metadata"]["generation"] = json!(1);
            }
        }
        let user = opts.user;
        {
            let ctx = Self::ctx(st, user);
            kinds::prepare(rt, old, &mut obj, &ctx)?;
        }
        if old.is_none()
            && rt.kind == "Secret"
            && obj["type"] == "kubernetes.io/service-account-token"
        {
            self.fill_legacy_token(st, ns, &mut obj)?;
        }
        kinds::tidy(&mut obj);

        // Ownership.
        let old_entries = old.map(managed::entries).unwrap_or_default();
        let requested = obj["metadata"]["managedFields"].clone();
        let mut entries = match old {
            Some(o) if requested != o["metadata"]["managedFields"] && !requested.is_null() => {
                managed::entries(&obj)
            }
            _ => old_entries.clone(),
        };
        let without_meta = |v: &Value| {
            let mut c = v.clone();
            if let Some(m) = c["metadata"].as_object_mut() {
                m.remove("managedFields");
                m.remove("resourceVersion");
            }
            c
        };
        let body = without_meta(&obj);
        match ownership {
            Ownership::Update => {
                let set = managed::leaves(&managed::field_set(&body, rt.kind));
                let before = old.map_or(Value::Null, without_meta);
                let changed: Vec<Vec<String>> = set
                    .into_iter()
                    .filter(|p| managed::value_at(&before, p) != managed::value_at(&body, p))
                    .collect();
                if !changed.is_empty() {
                    for e in &mut entries {
                        if e.manager != opts.manager || e.operation != "Update" {
                            e.fields.retain(|p| !changed.contains(p));
                        }
                    }
                    if let Some(e) = entries
                        .iter_mut()
                        .find(|e| e.manager == opts.manager && e.operation == "Update")
                    {
                        for p in changed {
                            if !e.fields.contains(&p) {
                                e.fields.push(p);
                            }
                        }
                        e.time.clone_from(&now);
                    } else {
                        entries.push(Entry {
                            manager: opts.manager.clone(),
                            operation: "Update".into(),
                            api_version: rt.group_version(),
                            time: now.clone(),
                            fields: changed,
                            subresource: opts.subresource.map(str::to_owned),
                        });
                    }
                }
            }
            Ownership::Apply(set) => {
                // Other managers keep fields applied with the same value (shared ownership)
                // and lose those whose value changed (a forced apply).
                let before = old.map_or(Value::Null, without_meta);
                for e in &mut entries {
                    if e.manager != opts.manager || e.operation != "Apply" {
                        e.fields.retain(|p| {
                            !set.contains(p)
                                || managed::value_at(&before, p) == managed::value_at(&body, p)
                        });
                    }
                }
                if let Some(e) = entries
                    .iter_mut()
                    .find(|e| e.manager == opts.manager && e.operation == "Apply")
                {
                    if e.fields != set {
                        e.fields = set;
                        e.time.clone_from(&now);
                    }
                } else {
                    entries.push(Entry {
                        manager: opts.manager.clone(),
                        operation: "Apply".into(),
                        api_version: rt.group_version(),
                        time: now.clone(),
                        fields: set,
                        subresource: None,
                    });
                }
            }
            Ownership::System => {}
        }
        managed::prune(&mut entries, &body);

        if let Some(old) = old {
            let same_body = without_meta(old) == body;
            let same_owners = entries.len() == old_entries.len()
                && entries.iter().zip(&old_entries).all(|(a, b)| {
                    a.manager == b.manager && a.operation == b.operation && a.fields == b.fields
                });
            if same_body && same_owners {
                return Ok(Written {
                    object: old.clone(),
                    warnings,
                });
            }
            if rt.kind == "Deployment" && old["spec"] != obj["spec"] {
                let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
                obj["metadata"]["generation"] = json!(g + 1);
            }
        }
        if let Some(m) = obj["metadata"].as_object_mut() {
            if entries.is_empty() {
                m.remove("managedFields");
            } else {
                m.insert(
                    "managedFields".into(),
                    entries.iter().map(Entry::to_json).collect(),
                );
            }
        }
        if opts.dry_run {
            if let Some(old) = old {
                obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
            }
            return Ok(Written {
                object: obj,
                warnings,
            });
        }
        let rv = st.next_rv();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        st.objects.insert(
            (
                rt_idx,
                if rt.namespaced {
                    ns.to_owned()
                } else {
                    String::new()
                },
                name.clone(),
            ),
            obj.clone(),
        );
        let kind = if old.is_some() { "MODIFIED" } else { "ADDED" };
        self.emit(st, rt_idx, ns, rv, kind, obj.clone());
        self.after_write(st, rt_idx, ns, &name, old, &obj);
        let object = if rt.kind == "Deployment" {
            st.get(rt_idx, ns, &name).cloned().unwrap_or(obj)
        } else {
            obj
        };
        Ok(Written { object, warnings })
    }

    fn system_user() -> User {
        User {
            name: "system:kube-controller-manager".into(),
            uid: String::new(),
            groups: vec!["system:masters".into()],
        }
    }

    fn system_opts(user: &User) -> WriteOpts<'_> {
        WriteOpts {
            dry_run: false,
            manager: "kube-controller-manager".into(),
            validation: Validation::Ignore,
            user,
            subresource: None,
        }
    }

    /// Controllers: default service accounts, deployments' pods.
    fn after_write(
        &self,
        st: &mut State,
        rt_idx: usize,
        ns: &str,
        name: &str,
        old: Option<&Value>,
        obj: &Value,
    ) {
        let kind = RESOURCES[rt_idx].kind;
        if kind == "Namespace"
            && old.is_none()
            && st.get(idx("serviceaccounts"), name, "default").is_none()
        {
            let user = Self::system_user();
            let sa = json!({"metadata": {"name": "default", "namespace": name}});
            let _ = self.commit(
                st,
                idx("serviceaccounts"),
                name,
                None,
                sa,
                &Self::system_opts(&user),
                Ownership::System,
            );
        }
        if kind == "Deployment" {
            let changed = old.is_none_or(|o| {
                o["spec"]["template"] != obj["spec"]["template"]
                    || o["spec"]["replicas"] != obj["spec"]["replicas"]
            });
            if changed {
                self.reconcile_deployment(st, ns, name);
            }
        }
    }

    /// Replaces the pods of a deployment whose template changed, and scales to `replicas`.
    pub(crate) fn reconcile_deployment(&self, st: &mut State, ns: &str, name: &str) {
        let dep_idx = idx("deployments");
        let pod_idx = idx("pods");
        let Some(dep) = st.get(dep_idx, ns, name).cloned() else {
            return;
        };
        let template = dep["spec"]["template"].clone();
        let hash = template_hash(&template);
        let replicas = usize::try_from(dep["spec"]["replicas"].as_i64().unwrap_or(1)).unwrap_or(0);
        let rs_name = format!("{name}-{hash}");
        let prefix = format!("{name}-");
        let owned: Vec<(String, bool)> = st
            .list(pod_idx, Some(ns))
            .into_iter()
            .filter_map(|p| {
                let owner = p["metadata"]["ownerReferences"][0]["name"].as_str()?;
                let rs = owner.strip_prefix(&prefix)?;
                (p["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet" && !rs.contains('-'))
                    .then(|| {
                        (
                            p["metadata"]["name"]
                                .as_str()
                                .unwrap_or_default()
                                .to_owned(),
                            owner == rs_name,
                        )
                    })
            })
            .collect();
        let mut current = 0;
        for (pod, is_current) in &owned {
            if *is_current && current < replicas {
                current += 1;
            } else {
                self.remove_inner(st, pod_idx, ns, pod, false);
            }
        }
        let user = Self::system_user();
        let ns_labels = st
            .get(idx("namespaces"), "", ns)
            .map_or(Value::Null, |n| n["metadata"]["labels"].clone());
        let rs_uid = uuid_from(&rs_name);
        for _ in current..replicas {
            let mut labels = template["metadata"]["labels"].clone();
            labels["pod-template-hash"] = json!(hash);
            let mut pod = json!({
                "metadata": {
                    "name": format!("{rs_name}-{}", safe_suffix(5)),
                    "namespace": ns,
                    "labels": labels,
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs_name,
                                         "uid": rs_uid, "controller": true, "blockOwnerDeletion": true}],
                },
                "spec": template["spec"].clone(),
            });
            if let Some(a) = template["metadata"]["annotations"].as_object() {
                pod["metadata"]["annotations"] = json!(a);
            }
            if self.sidecar_injection {
                inject_sidecar(&mut pod, &ns_labels, name);
            }
            let _ = self.commit(
                st,
                pod_idx,
                ns,
                None,
                pod,
                &Self::system_opts(&user),
                Ownership::System,
            );
        }
        // Status, as the deployment controller reports a finished rollout.
        let ready = i64::try_from(replicas).unwrap_or(0);
        if let Some(mut dep) = st.get(dep_idx, ns, name).cloned() {
            let now = now_rfc3339();
            let cond = |t: &str, reason: &str, msg: String| json!({"type": t, "status": "True", "lastUpdateTime": now, "lastTransitionTime": now, "reason": reason, "message": msg});
            let status = json!({
                "observedGeneration": dep["metadata"]["generation"],
                "replicas": ready, "updatedReplicas": ready, "readyReplicas": ready, "availableReplicas": ready,
                "conditions": [
                    cond("Available", "MinimumReplicasAvailable", "Deployment has minimum availability.".into()),
                    cond("Progressing", "NewReplicaSetAvailable", format!("ReplicaSet \"{rs_name}\" has successfully progressed.")),
                ],
            });
            if dep["status"] != status {
                dep["status"] = status;
                let rv = st.next_rv();
                dep["metadata"]["resourceVersion"] = json!(rv.to_string());
                st.objects
                    .insert((dep_idx, ns.to_owned(), name.to_owned()), dep.clone());
                self.emit(st, dep_idx, ns, rv, "MODIFIED", dep);
            }
        }
    }

    /// Removes an object (and what it owns) without checks; returns it. A removed pod of a
    /// deployment is replaced, as its `ReplicaSet` would.
    pub(crate) fn remove(
        &self,
        st: &mut State,
        rt_idx: usize,
        ns: &str,
        name: &str,
    ) -> Option<Value> {
        self.remove_inner(st, rt_idx, ns, name, true)
    }

    fn remove_inner(
        &self,
        st: &mut State,
        rt_idx: usize,
        ns: &str,
        name: &str,
        replace: bool,
    ) -> Option<Value> {
        let rt = &RESOURCES[rt_idx];
        let key = (
            rt_idx,
            if rt.namespaced {
                ns.to_owned()
            } else {
                String::new()
            },
            name.to_owned(),
        );
        let mut obj = st.objects.remove(&key)?;
        let rv = st.next_rv();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.emit(st, rt_idx, ns, rv, "DELETED", obj.clone());
        match rt.kind {
            "Namespace" => {
                let keys: Vec<Key> = st
                    .objects
                    .keys()
                    .filter(|(r, n, _)| RESOURCES[*r].namespaced && n == name)
                    .cloned()
                    .collect();
                for (r, n, o) in keys {
                    self.remove_inner(st, r, &n, &o, false);
                }
            }
            "Deployment" => {
                let prefix = format!("{name}-");
                let pods: Vec<String> = st
                    .list(idx("pods"), Some(ns))
                    .into_iter()
                    .filter(|p| {
                        p["metadata"]["ownerReferences"][0]["name"]
                            .as_str()
                            .is_some_and(|o| {
                                o.strip_prefix(&prefix).is_some_and(|h| !h.contains('-'))
                            })
                    })
                    .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
                    .collect();
                for p in pods {
                    self.remove_inner(st, idx("pods"), ns, &p, false);
                }
            }
            "Pod" if replace => {
                // The ReplicaSet replaces a deleted pod.
                if let Some(owner) = obj["metadata"]["ownerReferences"][0]["name"].as_str()
                    && let Some((dep, _)) = owner.rsplit_once('-')
                    && st.get(idx("deployments"), ns, dep).is_some()
                {
                    self.reconcile_deployment(st, ns, dep);
                }
            }
            _ => {}
        }
        Some(obj)
    }

    fn fill_legacy_token(&self, st: &State, ns: &str, secret: &mut Value) -> Result<(), ApiError> {
        let sa_name = secret["metadata"]["annotations"]["kubernetes.io/service-account.name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let Some(sa) = st.get(idx("serviceaccounts"), ns, &sa_name) else {
            return Ok(());
        };
        let sa_uid = sa["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let secret_name = secret["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let claims = json!({
            "iss": LEGACY_ISSUER,
            "kubernetes.io/serviceaccount/namespace": ns,
            "kubernetes.io/serviceaccount/secret.name": secret_name,
            "kubernetes.io/serviceaccount/service-account.name": sa_name,
            "kubernetes.io/serviceaccount/service-account.uid": sa_uid,
            "sub": format!("system:serviceaccount:{ns}:{sa_name}"),
        });
        let token = self
            .signer
            .sign(&claims)
            .map_err(|_| ApiError::internal("signing the service account token failed"))?;
        secret["metadata"]["annotations"]["kubernetes.io/service-account.uid"] = json!(sa_uid);
        secret["data"]["token"] = json!(STANDARD.encode(token));
        secret["data"]["ca.crt"] = json!(STANDARD.encode(&self.ca_pem));
        secret["data"]["namespace"] = json!(STANDARD.encode(ns));
        Ok(())
    }

    /// Signs a projected service-account token.
    pub(crate) fn sign_token(
        &self,
        ns: &str,
        sa: &Value,
        audiences: &[String],
        issued_at: i64,
        expires_at: i64,
        bound: Option<(&str, &Value)>,
    ) -> Result<String, ApiError> {
        let sa_name = sa["metadata"]["name"].as_str().unwrap_or_default();
        let mut k8s = json!({
            "namespace": ns,
            "serviceaccount": {"name": sa_name, "uid": sa["metadata"]["uid"]},
        });
        if let Some((kind, obj)) = bound {
            let key = if kind == "Pod" { "pod" } else { "secret" };
            k8s[key] = json!({"name": obj["metadata"]["name"], "uid": obj["metadata"]["uid"]});
        }
        let claims = json!({
            "aud": audiences,
            "exp": expires_at,
            "iat": issued_at,
            "iss": self.issuer,
            "jti": uuid::Uuid::new_v4().to_string(),
            "kubernetes.io": k8s,
            "nbf": issued_at,
            "sub": format!("system:serviceaccount:{ns}:{sa_name}"),
        });
        self.signer
            .sign(&claims)
            .map_err(|_| ApiError::internal("signing the service account token failed"))
    }

    /// `POST …/serviceaccounts/{name}/token`.
    pub(crate) fn token_request(
        &self,
        st: &State,
        ns: &str,
        name: &str,
        body: &Value,
    ) -> Result<Value, ApiError> {
        let sa_rt = &RESOURCES[idx("serviceaccounts")];
        let sa = st
            .get(idx("serviceaccounts"), ns, name)
            .ok_or_else(|| ApiError::not_found(sa_rt, name))?;
        let spec = &body["spec"];
        let expiration = spec["expirationSeconds"].as_i64().unwrap_or(3600);
        let tr_rt = ResourceType {
            group: "authentication.k8s.io",
            kind: "TokenRequest",
            ..RESOURCES[idx("serviceaccounts")]
        };
        if expiration < 600 {
            return Err(ApiError::invalid(
                &tr_rt,
                name,
                &[Cause::invalid(
                    "spec.expirationSeconds",
                    &json!(expiration),
                    "may not specify a duration less than 10 minutes",
                )],
            ));
        }
        if expiration > 1 << 32 {
            return Err(ApiError::invalid(
                &tr_rt,
                name,
                &[Cause::invalid(
                    "spec.expirationSeconds",
                    &json!(expiration),
                    "may not specify a duration larger than 2^32 seconds",
                )],
            ));
        }
        let audiences: Vec<String> = spec["audiences"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .filter(|a: &Vec<String>| !a.is_empty())
            .unwrap_or_else(|| self.api_audiences.clone());
        let bound_ref = &spec["boundObjectRef"];
        let bound = match bound_ref["kind"].as_str() {
            None => None,
            Some(kind @ ("Pod" | "Secret")) => {
                let plural = if kind == "Pod" { "pods" } else { "secrets" };
                let bname = bound_ref["name"].as_str().unwrap_or_default();
                let obj = st
                    .get(idx(plural), ns, bname)
                    .ok_or_else(|| ApiError::not_found(&RESOURCES[idx(plural)], bname))?;
                if let Some(uid) = bound_ref["uid"].as_str()
                    && !uid.is_empty()
                    && obj["metadata"]["uid"].as_str() != Some(uid)
                {
                    return Err(ApiError::conflict(
                        &RESOURCES[idx(plural)],
                        bname,
                        "the UID in the bound object reference does not match",
                    ));
                }
                Some((kind, obj))
            }
            Some(other) => {
                return Err(ApiError::invalid(
                    &tr_rt,
                    name,
                    &[Cause::invalid(
                        "spec.boundObjectRef.kind",
                        &json!(other),
                        "supported values: \"Pod\", \"Secret\", \"Node\"",
                    )],
                ));
            }
        };
        let iat = now_seconds();
        let exp = iat + expiration;
        let token = self.sign_token(ns, sa, &audiences, iat, exp, bound)?;
        Ok(json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": now_rfc3339()},
            "spec": {"audiences": audiences, "expirationSeconds": expiration, "boundObjectRef": if bound_ref.is_object() { bound_ref.clone() } else { Value::Null }},
            "status": {"token": token, "expirationTimestamp": rfc3339_of(exp)},
        }))
    }

    /// Validates a token as the API server's service-account authenticator does.
    pub(crate) fn authenticate_token(
        &self,
        st: &State,
        token: &str,
        audiences: &[String],
    ) -> Result<(User, Verified), String> {
        let v = self.signer.verify(
            token,
            &self.issuer,
            &self.api_audiences,
            audiences,
            now_seconds(),
        )?;
        let sa = st
            .get(idx("serviceaccounts"), &v.namespace, &v.service_account)
            .ok_or_else(|| format!("serviceaccounts \"{}\" not found", v.service_account))?;
        let uid = sa["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if let Some(want) = &v.sa_uid
            && *want != uid
        {
            return Err(format!(
                "service account UID ({want}) does not match claim ({uid})"
            ));
        }
        if let Some(secret) = &v.secret {
            let stored = st
                .get(idx("secrets"), &v.namespace, secret)
                .and_then(|s| s["data"]["token"].as_str())
                .and_then(|t| STANDARD.decode(t).ok());
            if stored.as_deref() != Some(token.as_bytes()) {
                return Err(format!(
                    "secrets \"{secret}\" not found or token was revoked"
                ));
            }
        }
        if let Some((pod, pod_uid)) = &v.pod {
            let live = st
                .get(idx("pods"), &v.namespace, pod)
                .and_then(|p| p["metadata"]["uid"].as_str());
            if live != Some(pod_uid.as_str()) {
                return Err(format!("pods \"{pod}\" not found or recreated"));
            }
        }
        let user = User {
            name: format!(
                "system:serviceaccount:{}:{}",
                v.namespace, v.service_account
            ),
            uid,
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{}", v.namespace),
                "system:authenticated".into(),
            ],
        };
        Ok((user, v))
    }

    /// `POST /apis/authentication.k8s.io/v1/tokenreviews`.
    pub(crate) fn token_review(&self, st: &State, body: &Value) -> Value {
        let spec = &body["spec"];
        let token = spec["token"].as_str().unwrap_or_default();
        let audiences: Vec<String> = spec["audiences"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let status = match self.authenticate_token(st, token, &audiences) {
            Ok((user, v)) => {
                let mut extra = serde_json::Map::new();
                if let Some(id) = &v.id {
                    extra.insert(
                        "authentication.kubernetes.io/credential-id".into(),
                        json!([format!("JTI={id}")]),
                    );
                }
                if let Some((pod, pod_uid)) = &v.pod {
                    extra.insert("authentication.kubernetes.io/pod-name".into(), json!([pod]));
                    extra.insert(
                        "authentication.kubernetes.io/pod-uid".into(),
                        json!([pod_uid]),
                    );
                }
                let mut u = json!({"username": user.name, "uid": user.uid, "groups": user.groups});
                if !extra.is_empty() {
                    u["extra"] = Value::Object(extra);
                }
                json!({"authenticated": true, "user": u, "audiences": v.audiences})
            }
            Err(why) => json!({"user": {}, "error": format!("[invalid bearer token, {why}]")}),
        };
        json!({
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "spec": spec,
            "status": status,
        })
    }

    /// Authenticates a bearer token: the admin token or a service-account token.
    pub(crate) fn authenticate(&self, st: &State, bearer: Option<&str>) -> Option<User> {
        let token = bearer?;
        if constant_time_eq(
            token.as_bytes(),
            self.admin_token.expose_secret().as_bytes(),
        ) {
            return Some(admin_user());
        }
        self.authenticate_token(st, token, &[]).ok().map(|(u, _)| u)
    }

    /// Denial rules first, then `system:masters`, then RBAC.
    pub(crate) fn authorize(
        st: &State,
        user: &User,
        verb: &str,
        rt: &ResourceType,
        subresource: Option<&str>,
        ns: Option<&str>,
        name: Option<&str>,
    ) -> Result<(), ApiError> {
        let resource = match subresource {
            Some(s) => format!("{}/{s}", rt.plural),
            None => rt.plural.to_owned(),
        };
        let forbidden = || {
            ApiError::forbidden(
                &resource,
                rt.group,
                name,
                &user.name,
                verb,
                ns.filter(|_| rt.namespaced),
            )
        };
        let denied = st.denials.iter().any(|(v, r)| {
            (v == "*" || v == verb) && (r == "*" || *r == resource || *r == rt.plural)
        });
        if denied {
            return Err(forbidden());
        }
        if user.groups.iter().any(|g| g == "system:masters") {
            return Ok(());
        }
        if rbac_allows(st, user, verb, rt.group, &resource, ns, name) {
            Ok(())
        } else {
            Err(forbidden())
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) fn admin_user() -> User {
    User {
        name: "kubernetes-admin".into(),
        uid: String::new(),
        groups: vec!["system:masters".into(), "system:authenticated".into()],
    }
}

fn subject_matches(subject: &Value, user: &User, binding_ns: Option<&str>) -> bool {
    let name = subject["name"].as_str().unwrap_or_default();
    match subject["kind"].as_str() {
        Some("User") => name == user.name,
        Some("Group") => user.groups.iter().any(|g| g == name),
        Some("ServiceAccount") => {
            let ns = subject["namespace"]
                .as_str()
                .filter(|s| !s.is_empty())
                .or(binding_ns)
                .unwrap_or_default();
            user.name == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

fn rule_allows(rule: &Value, verb: &str, group: &str, resource: &str, name: Option<&str>) -> bool {
    let has = |field: &str, want: &str| {
        rule[field]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v == "*" || v.as_str() == Some(want)))
    };
    let names_ok = rule["resourceNames"].as_array().is_none_or(|a| {
        a.is_empty() || name.is_some_and(|n| a.iter().any(|v| v.as_str() == Some(n)))
    });
    has("verbs", verb) && has("apiGroups", group) && has("resources", resource) && names_ok
}

fn rbac_allows(
    st: &State,
    user: &User,
    verb: &str,
    group: &str,
    resource: &str,
    ns: Option<&str>,
    name: Option<&str>,
) -> bool {
    let roles_of = |role_ref: &Value, binding_ns: Option<&str>| -> Vec<Value> {
        let rname = role_ref["name"].as_str().unwrap_or_default();
        let role = match (role_ref["kind"].as_str(), binding_ns) {
            (Some("ClusterRole"), _) => st.get(idx("clusterroles"), "", rname),
            (Some("Role"), Some(bns)) => st.get(idx("roles"), bns, rname),
            _ => None,
        };
        role.and_then(|r| r["rules"].as_array().cloned())
            .unwrap_or_default()
    };
    let allowed_by = |binding: &Value, binding_ns: Option<&str>| {
        binding["subjects"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| subject_matches(s, user, binding_ns)))
            && roles_of(&binding["roleRef"], binding_ns)
                .iter()
                .any(|r| rule_allows(r, verb, group, resource, name))
    };
    if st
        .list(idx("clusterrolebindings"), None)
        .into_iter()
        .any(|b| allowed_by(b, None))
    {
        return true;
    }
    ns.is_some_and(|ns| {
        st.list(idx("rolebindings"), Some(ns))
            .into_iter()
            .any(|b| allowed_by(b, Some(ns)))
    })
}

/// Adds the Istio sidecar the injector of the namespace's revision would add.
fn inject_sidecar(pod: &mut Value, ns_labels: &Value, app: &str) {
    let rev = match (
        ns_labels["istio-injection"].as_str(),
        ns_labels["istio.io/rev"].as_str(),
    ) {
        (Some("enabled"), _) => "default".to_owned(),
        (Some(_), _) | (None, None) => return,
        (None, Some(rev)) => rev.to_owned(),
    };
    let opt_out = |v: &Value| v["sidecar.istio.io/inject"] == "false";
    if opt_out(&pod["metadata"]["labels"]) || opt_out(&pod["metadata"]["annotations"]) {
        return;
    }
    let name = pod["metadata"]["labels"]["app"]
        .as_str()
        .unwrap_or(app)
        .to_owned();
    let labels = &mut pod["metadata"]["labels"];
    labels["istio.io/rev"] = json!(rev);
    labels["security.istio.io/tlsMode"] = json!("istio");
    labels["service.istio.io/canonical-name"] = json!(name);
    labels["service.istio.io/canonical-revision"] = json!("latest");
    pod["metadata"]["annotations"]["sidecar.istio.io/status"] = json!(
        json!({"initContainers": ["istio-init"], "containers": ["istio-proxy"], "volumes": ["istio-envoy", "istio-data", "istio-token"], "revision": rev}).to_string()
    );
    if let Some(cs) = pod["spec"]["containers"].as_array_mut() {
        cs.push(json!({"name": "istio-proxy", "image": "gcr.io/gke-release/asm/proxyv2:sandbox", "args": ["proxy", "sidecar"]}));
    }
}

/// Seeds the objects every cluster starts with.
pub(crate) fn seed(shared: &Shared, server_address: &str) {
    let user = admin_user();
    let opts = WriteOpts {
        dry_run: false,
        manager: "kube-apiserver".into(),
        validation: Validation::Ignore,
        user: &user,
        subresource: None,
    };
    let mut st = shared.lock();
    let objects = [
        json!({"kind": "Namespace", "metadata": {"name": "default"}}),
        json!({"kind": "Namespace", "metadata": {"name": "kube-system"}}),
        json!({"kind": "Namespace", "metadata": {"name": "kube-public"}}),
        json!({"kind": "Namespace", "metadata": {"name": "kube-node-lease"}}),
        json!({"kind": "Node", "metadata": {"name": "sandbox-node-1", "labels": {"kubernetes.io/hostname": "sandbox-node-1", "kubernetes.io/os": "linux"}},
               "spec": {}, "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.10"}, {"type": "Hostname", "address": "sandbox-node-1"}],
                                      "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                                      "nodeInfo": {"kubeletVersion": "v1.32.4", "osImage": "sandbox", "containerRuntimeVersion": "sandbox://1"}}}),
        json!({"kind": "ClusterRole", "metadata": {"name": "cluster-admin"}, "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}),
        json!({"kind": "ClusterRole", "metadata": {"name": "system:auth-delegator"},
               "rules": [{"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
                         {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]}]}),
        json!({"kind": "ClusterRole", "metadata": {"name": "view"},
               "rules": [{"apiGroups": ["", "apps"], "resources": ["configmaps", "endpoints", "pods", "pods/log", "serviceaccounts", "services", "namespaces", "deployments"], "verbs": ["get", "list", "watch"]}]}),
        json!({"kind": "ClusterRole", "metadata": {"name": "edit"},
               "rules": [{"apiGroups": ["", "apps"], "resources": ["configmaps", "endpoints", "pods", "secrets", "serviceaccounts", "services", "deployments"], "verbs": ["*"]},
                         {"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]}]}),
        json!({"kind": "ClusterRoleBinding", "metadata": {"name": "cluster-admin"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:masters"}]}),
        json!({"kind": "Service", "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
               "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "targetPort": 6443}]}}),
        json!({"kind": "Endpoints", "metadata": {"name": "kubernetes", "namespace": "default"},
               "subsets": [{"addresses": [{"ip": server_address}], "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]}]}),
    ];
    for obj in objects {
        let kind = obj["kind"].as_str().unwrap_or_default();
        let group = match kind {
            "ClusterRole" | "ClusterRoleBinding" => "rbac.authorization.k8s.io",
            _ => "",
        };
        if let Some(rt_idx) = find_kind(group, kind) {
            let ns = obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let _ = shared.commit(&mut st, rt_idx, &ns, None, obj, &opts, Ownership::System);
        }
    }
}

/// A stable uid derived from a name (for the emulated `ReplicaSets`, which are not stored).
fn uuid_from(name: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    let mut b = [0_u8; 16];
    b.copy_from_slice(&d.as_ref()[..16]);
    uuid::Builder::from_random_bytes(b).into_uuid().to_string()
}
