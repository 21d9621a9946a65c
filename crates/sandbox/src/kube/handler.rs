//! Request routing and the REST verbs.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use super::body::ResponseBody;
use super::cluster::{
    Cluster, Event, Ownership, REQUEST_LOG, RecordedRequest, Shared, State, User, Validation,
    WriteOpts, Written, admin_user, now_seconds,
};
use super::managed;
use super::patch;
use super::protobuf;
use super::resources::{self, RESOURCES, ResourceType, find};
use super::selectors::{FieldSelector, LabelSelector};
use super::status::{self, ApiError};
use super::table;

const AGGREGATED_DISCOVERY: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
/// Longest a watch stays open when the client names no timeout.
const DEFAULT_WATCH_SECONDS: u64 = 1800;

/// A buffered request.
#[derive(Debug)]
pub(crate) struct Req {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) query: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: &str) -> Self {
        Self(form_urlencoded::parse(q.as_bytes()).into_owned().collect())
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }

    fn dry_run(&self) -> bool {
        self.0.iter().any(|(k, v)| k == "dryRun" && v == "All")
    }
}

/// The resource a request addresses.
struct Target {
    rt_idx: usize,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

type Resp = Response<ResponseBody>;

fn respond(code: u16, content_type: &str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(ResponseBody::full(body));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

fn json_resp(code: u16, v: &Value) -> Resp {
    respond(code, "application/json", v.to_string())
}

fn error_resp(e: &ApiError) -> Resp {
    json_resp(e.code, &e.to_status())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> &str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

fn media_type(headers: &HeaderMap) -> String {
    header_str(headers, header::CONTENT_TYPE)
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Parses `rest` (the path after `/api/v1` or `/apis/g/v`) into a target.
fn target(group: &str, version: &str, rest: &[String]) -> Option<Target> {
    let namespaced_form = rest.len() >= 3
        && rest[0] == "namespaces"
        && !matches!(rest[2].as_str(), "status" | "finalize");
    let (ns, rest) = if namespaced_form {
        (Some(rest[1].clone()), &rest[2..])
    } else {
        (None, rest)
    };
    let rt_idx = find(group, version, rest.first()?)?;
    let rt = &RESOURCES[rt_idx];
    if ns.is_some() && !rt.namespaced || rest.len() > 3 {
        return None;
    }
    let sub = rest.get(2).cloned();
    if let Some(s) = &sub
        && !rt.subresources.iter().any(|(n, _, _)| n == s)
    {
        return None;
    }
    Some(Target {
        rt_idx,
        ns,
        name: rest.get(1).cloned(),
        sub,
    })
}

fn strip_for_list(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("kind");
        m.remove("apiVersion");
    }
    v
}

fn decode_body(req: &Req) -> Result<Value, ApiError> {
    let ct = media_type(&req.headers);
    match ct.as_str() {
        "application/vnd.kubernetes.protobuf" => protobuf::decode(&req.body).map_err(|m| {
            if m.contains("not supported") {
                ApiError::unsupported_media_type(&ct)
            } else {
                ApiError::bad_request(format!("failed to decode protobuf body: {m}"))
            }
        }),
        "application/yaml" | "application/apply-patch+yaml" => {
            if let Ok(v) = serde_json::from_slice(&req.body) {
                return Ok(v);
            }
            let text = std::str::from_utf8(&req.body)
                .map_err(|_| ApiError::bad_request("the YAML body is not UTF-8"))?;
            serde_saphyr::from_str::<Value>(text)
                .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))
        }
        ""
        | "application/json"
        | "*/*"
        | "application/merge-patch+json"
        | "application/json-patch+json"
        | "application/strategic-merge-patch+json" => {
            serde_json::from_slice(&req.body).map_err(|e| {
                ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
            })
        }
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

fn check_type_meta(rt: &ResourceType, body: &Value) -> Result<(), ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(format!(
            "the request body must be a {} object",
            rt.kind
        )));
    }
    if let Some(av) = body["apiVersion"].as_str()
        && !av.is_empty()
        && av != rt.group_version()
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({})",
            rt.group_version()
        )));
    }
    if let Some(k) = body["kind"].as_str()
        && !k.is_empty()
        && k != rt.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({k}) does not match the expected kind ({})",
            rt.kind
        )));
    }
    Ok(())
}

fn validation(q: &Query) -> Validation {
    match q.get("fieldValidation") {
        Some("Strict") => Validation::Strict,
        Some("Warn") => Validation::Warn,
        _ => Validation::Ignore,
    }
}

fn default_manager(headers: &HeaderMap) -> String {
    let ua = header_str(headers, header::USER_AGENT);
    let m = ua.split('/').next().unwrap_or_default().trim();
    if m.is_empty() {
        "unknown".to_owned()
    } else {
        m.to_owned()
    }
}

fn with_warnings(mut r: Resp, warnings: &[String]) -> Resp {
    for w in warnings {
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{}\"", w.replace('"', "\\\""))) {
            r.headers_mut().append(header::WARNING, v);
        }
    }
    r
}

fn matches_selectors(obj: &Value, labels: &LabelSelector, fields: &FieldSelector) -> bool {
    labels.matches(&obj["metadata"]["labels"]) && fields.matches(obj)
}

/// The answer of an injected fault.
fn fault_response(code: u16) -> Resp {
    let (reason, message) = match code {
        429 => (
            "TooManyRequests",
            "the server has received too many requests and has asked us to try again later",
        ),
        503 => (
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        ),
        504 => (
            "Timeout",
            "the server was unable to return a response in the time allotted, but may still be processing the request",
        ),
        _ => (
            "InternalError",
            "an error on the server has prevented the request from succeeding",
        ),
    };
    let err = ApiError {
        code,
        reason,
        message: message.to_owned(),
        details: None,
    };
    let mut r = error_resp(&err);
    if code == 429 {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

impl Cluster {
    /// Answers one request. `default_admin` treats requests without credentials as the admin
    /// (the in-process service); over HTTPS they get 401.
    pub(crate) fn handle(&self, req: &Req, default_admin: bool) -> Resp {
        // A bug must cost one request, never the server.
        let routed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.route(req, default_admin)
        }));
        let (resp, user) = routed.unwrap_or_else(|_| {
            let err = ApiError::internal("the emulated API server failed on this request");
            (error_resp(&err), String::new())
        });
        let mut st = self.shared.lock();
        st.requests.push_back(RecordedRequest {
            method: req.method.to_string(),
            path: req.path.clone(),
            query: req.query.clone(),
            content_type: req
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            user,
            status: resp.status().as_u16(),
        });
        while st.requests.len() > REQUEST_LOG {
            st.requests.pop_front();
        }
        resp
    }

    fn route(&self, req: &Req, default_admin: bool) -> (Resp, String) {
        let segs: Vec<String> = req
            .path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(percent_decode)
            .collect();
        let s: Vec<&str> = segs.iter().map(String::as_str).collect();
        match s.as_slice() {
            ["version"] => {
                return (
                    json_resp(
                        200,
                        &json!({
                            "major": "1", "minor": "32", "gitVersion": "v1.32.4-sandbox",
                            "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
                            "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.23.8", "compiler": "gc",
                            "platform": "linux/amd64",
                        }),
                    ),
                    String::new(),
                );
            }
            ["healthz" | "readyz" | "livez"] => {
                return (respond(200, "text/plain", "ok"), String::new());
            }
            _ => {}
        }
        let fault = self.shared.lock().faults.pop_front();
        if let Some(code) = fault {
            return (fault_response(code), String::new());
        }
        let auth = header_str(&req.headers, header::AUTHORIZATION);
        let bearer = auth.strip_prefix("Bearer ").map(str::trim);
        let user = {
            let st = self.shared.lock();
            self.shared.authenticate(&st, bearer)
        };
        let user = match (user, bearer.is_none() && auth.is_empty() && default_admin) {
            (Some(u), _) => u,
            (None, true) => admin_user(),
            (None, false) => return (error_resp(&ApiError::unauthorized()), String::new()),
        };
        let name = user.name.clone();
        let accept = header_str(&req.headers, header::ACCEPT);
        let aggregated = accept.contains("as=APIGroupDiscoveryList");
        let resp = match s.as_slice() {
            ["api"] if aggregated => respond(
                200,
                AGGREGATED_DISCOVERY,
                resources::aggregated(true).to_string(),
            ),
            ["apis"] if aggregated => respond(
                200,
                AGGREGATED_DISCOVERY,
                resources::aggregated(false).to_string(),
            ),
            ["api"] => json_resp(200, &resources::api_versions(&self.server_address())),
            ["apis"] => json_resp(200, &resources::api_group_list()),
            ["api", v] => resources::api_resource_list("", v).map_or_else(
                || error_resp(&ApiError::path_not_found()),
                |d| json_resp(200, &d),
            ),
            ["apis", g] => resources::api_group_doc(g).map_or_else(
                || error_resp(&ApiError::path_not_found()),
                |d| json_resp(200, &d),
            ),
            ["apis", g, v] => resources::api_resource_list(g, v).map_or_else(
                || error_resp(&ApiError::path_not_found()),
                |d| json_resp(200, &d),
            ),
            ["openapi", "v3"] => json_resp(200, &resources::openapi_root()),
            ["openapi", "v3", rest @ ..] => match resources::openapi_group_version(&rest.join("/"))
            {
                Some(doc) => {
                    let mut r = json_resp(200, &doc);
                    r.headers_mut().insert(
                        header::CACHE_CONTROL,
                        HeaderValue::from_static("public, immutable"),
                    );
                    r
                }
                None => error_resp(&ApiError::path_not_found()),
            },
            ["api", "v1", rest @ ..] => self.resource(req, &user, "", "v1", rest),
            ["apis", g, v, rest @ ..] => self.resource(req, &user, g, v, rest),
            _ => error_resp(&ApiError::path_not_found()),
        };
        (resp, name)
    }

    fn server_address(&self) -> String {
        self.shared
            .server_url
            .lock()
            .map(|u| u.trim_start_matches("https://").to_owned())
            .unwrap_or_default()
    }

    fn resource(&self, req: &Req, user: &User, group: &str, version: &str, rest: &[&str]) -> Resp {
        let rest: Vec<String> = rest.iter().map(|s| (*s).to_owned()).collect();
        let Some(t) = target(group, version, &rest) else {
            return error_resp(&ApiError::path_not_found());
        };
        let q = Query::parse(&req.query);
        match self.dispatch(req, user, &t, &q) {
            Ok(r) => r,
            Err(e) => error_resp(&e),
        }
    }

    fn verb(req: &Req, t: &Target, q: &Query) -> Option<&'static str> {
        Some(match (&req.method, t.name.is_some()) {
            (&Method::GET, false) if q.flag("watch") => "watch",
            (&Method::GET, false) => "list",
            (&Method::POST, false) => "create",
            (&Method::DELETE, false) => "deletecollection",
            (&Method::GET, true) if t.sub.as_deref() == Some("log") => "get",
            (&Method::GET, true) => "get",
            (&Method::POST, true) if t.sub.is_some() => "create",
            (&Method::PUT, true) => "update",
            (&Method::PATCH, true) => "patch",
            (&Method::DELETE, true) if t.sub.is_none() => "delete",
            _ => return None,
        })
    }

    fn dispatch(&self, req: &Req, user: &User, t: &Target, q: &Query) -> Result<Resp, ApiError> {
        let rt = &RESOURCES[t.rt_idx];
        let verb = Self::verb(req, t, q).ok_or_else(ApiError::method_not_allowed)?;
        if !rt.verbs.contains(&verb) && t.sub.is_none() {
            return Err(ApiError::method_not_allowed());
        }
        if rt.namespaced && t.ns.is_none() && !matches!(verb, "list" | "watch") {
            return Err(ApiError::path_not_found());
        }
        let ns = t.ns.clone().unwrap_or_default();
        {
            let st = self.shared.lock();
            Shared::authorize(
                &st,
                user,
                verb,
                rt,
                t.sub.as_deref(),
                t.ns.as_deref(),
                t.name.as_deref(),
            )?;
        }
        let accept = header_str(&req.headers, header::ACCEPT);
        let as_table = accept.contains("as=Table");
        match (verb, t.sub.as_deref()) {
            ("watch", _) => Ok(self.watch(t, q)?),
            ("list", _) => {
                let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or_default())?;
                let fields = FieldSelector::parse(q.get("fieldSelector").unwrap_or_default())?;
                let st = self.shared.lock();
                let items: Vec<&Value> = st
                    .list(t.rt_idx, t.ns.as_deref())
                    .into_iter()
                    .filter(|o| matches_selectors(o, &labels, &fields))
                    .collect();
                let rv = st.rv.to_string();
                if as_table {
                    return Ok(json_resp(
                        200,
                        &table::table(rt, &items, &rv, now_seconds()),
                    ));
                }
                let items: Vec<Value> = items.into_iter().map(strip_for_list).collect();
                Ok(json_resp(
                    200,
                    &json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.group_version(),
                            "metadata": {"resourceVersion": rv}, "items": items}),
                ))
            }
            ("get", Some("log")) => self.logs(t, q),
            ("get", _) => {
                let name = t.name.as_deref().unwrap_or_default();
                let st = self.shared.lock();
                let obj = st
                    .get(t.rt_idx, &ns, name)
                    .ok_or_else(|| ApiError::not_found(rt, name))?;
                if as_table {
                    return Ok(json_resp(
                        200,
                        &table::table(rt, &[obj], &st.rv.to_string(), now_seconds()),
                    ));
                }
                Ok(json_resp(200, obj))
            }
            ("create", Some("token")) => {
                let body = decode_body(req)?;
                let st = self.shared.lock();
                let out = self.shared.token_request(
                    &st,
                    &ns,
                    t.name.as_deref().unwrap_or_default(),
                    &body,
                )?;
                Ok(json_resp(201, &out))
            }
            ("create", _) => self.handle_create(req, user, t, q),
            ("update" | "patch", _) => self.update_or_patch(req, user, t, q, verb),
            ("delete", _) => self.handle_delete(req, t, q),
            ("deletecollection", _) => {
                let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or_default())?;
                let fields = FieldSelector::parse(q.get("fieldSelector").unwrap_or_default())?;
                let mut st = self.shared.lock();
                let names: Vec<String> = st
                    .list(t.rt_idx, t.ns.as_deref())
                    .into_iter()
                    .filter(|o| matches_selectors(o, &labels, &fields))
                    .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_owned))
                    .collect();
                if !q.dry_run() {
                    for n in &names {
                        self.shared.remove(&mut st, t.rt_idx, &ns, n);
                    }
                }
                Ok(json_resp(
                    200,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
                ))
            }
            _ => Err(ApiError::method_not_allowed()),
        }
    }

    fn opts<'a>(req: &Req, q: &Query, user: &'a User, sub: Option<&'a str>) -> WriteOpts<'a> {
        WriteOpts {
            dry_run: q.dry_run(),
            manager: q
                .get("fieldManager")
                .map_or_else(|| default_manager(&req.headers), str::to_owned),
            validation: validation(q),
            user,
            subresource: sub,
        }
    }

    fn handle_create(
        &self,
        req: &Req,
        user: &User,
        t: &Target,
        q: &Query,
    ) -> Result<Resp, ApiError> {
        let rt = &RESOURCES[t.rt_idx];
        let ns = t.ns.clone().unwrap_or_default();
        let mut body = decode_body(req)?;
        check_type_meta(rt, &body)?;
        if rt.kind == "TokenReview" {
            let st = self.shared.lock();
            return Ok(json_resp(201, &self.shared.token_review(&st, &body)));
        }
        if !body["metadata"].is_object() {
            body["metadata"] = json!({});
        }
        if let Some(bns) = body["metadata"]["namespace"].as_str()
            && rt.namespaced
            && !bns.is_empty()
            && bns != ns
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let name = match body["metadata"]["name"].as_str().filter(|n| !n.is_empty()) {
            Some(n) => n.to_owned(),
            None => match body["metadata"]["generateName"]
                .as_str()
                .filter(|n| !n.is_empty())
            {
                Some(prefix) => format!("{prefix}{}", crate::random_string(5).to_ascii_lowercase()),
                None => {
                    return Err(ApiError::invalid(
                        rt,
                        "",
                        &[status::Cause::required("metadata.name")],
                    ));
                }
            },
        };
        body["metadata"]["name"] = json!(name);
        let opts = Self::opts(req, q, user, None);
        let mut st = self.shared.lock();
        if rt.namespaced && st.get(0, "", &ns).is_none() {
            return Err(ApiError::not_found(&RESOURCES[0], &ns));
        }
        if st.get(t.rt_idx, &ns, &name).is_some() {
            return Err(ApiError::already_exists(rt, &name));
        }
        let w = self
            .shared
            .commit(&mut st, t.rt_idx, &ns, None, body, &opts, Ownership::Update)?;
        Ok(with_warnings(json_resp(201, &w.object), &w.warnings))
    }

    fn update_or_patch(
        &self,
        req: &Req,
        user: &User,
        t: &Target,
        q: &Query,
        verb: &str,
    ) -> Result<Resp, ApiError> {
        let rt = &RESOURCES[t.rt_idx];
        let ns = t.ns.clone().unwrap_or_default();
        let name = t.name.clone().unwrap_or_default();
        let opts = Self::opts(req, q, user, t.sub.as_deref());
        let ct = media_type(&req.headers);
        let body = decode_body(req)?;
        let mut st = self.shared.lock();
        let old = st.get(t.rt_idx, &ns, &name).cloned();
        if verb == "patch" && ct == "application/apply-patch+yaml" {
            return self.apply(
                &mut st,
                rt,
                t,
                &ns,
                &name,
                old,
                body,
                &opts,
                q.flag("force"),
            );
        }
        let old = old.ok_or_else(|| ApiError::not_found(rt, &name))?;
        let new = if verb == "update" {
            check_type_meta(rt, &body)?;
            if let Some(n) = body["metadata"]["name"].as_str()
                && n != name
            {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            let mut b = body;
            b["metadata"]["name"] = json!(name);
            b
        } else {
            match ct.as_str() {
                "application/merge-patch+json" => {
                    let mut o = old.clone();
                    patch::merge_patch(&mut o, &body);
                    o
                }
                "application/json-patch+json" => {
                    let mut o = old.clone();
                    patch::json_patch(&mut o, &body).map_err(|e| ApiError {
                        code: 422,
                        reason: "Invalid",
                        message: format!(
                            "the server rejected our request due to an error in our request: {e}"
                        ),
                        details: None,
                    })?;
                    o
                }
                "application/strategic-merge-patch+json" => {
                    patch::strategic_merge(&old, &body, rt.kind).map_err(ApiError::bad_request)?
                }
                other => return Err(ApiError::unsupported_media_type(other)),
            }
        };
        let w = self.shared.commit(
            &mut st,
            t.rt_idx,
            &ns,
            Some(&old),
            new,
            &opts,
            Ownership::Update,
        )?;
        Ok(with_warnings(json_resp(200, &w.object), &w.warnings))
    }

    #[allow(clippy::too_many_arguments, reason = "the pieces of one apply request")]
    fn apply(
        &self,
        st: &mut State,
        rt: &ResourceType,
        t: &Target,
        ns: &str,
        name: &str,
        old: Option<Value>,
        mut applied: Value,
        opts: &WriteOpts<'_>,
        force: bool,
    ) -> Result<Resp, ApiError> {
        if opts.manager.is_empty() || opts.manager == "unknown" {
            return Err(ApiError::bad_request(
                "PATCH requests with an apply patch must specify fieldManager",
            ));
        }
        if applied["apiVersion"].as_str().is_none_or(str::is_empty)
            || applied["kind"].as_str().is_none_or(str::is_empty)
        {
            return Err(ApiError::bad_request(
                "invalid object type: apply patches need apiVersion and kind",
            ));
        }
        check_type_meta(rt, &applied)?;
        match applied["metadata"]["name"].as_str() {
            Some(n) if n == name => {}
            Some(n) => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            None => applied["metadata"]["name"] = json!(name),
        }
        if let Some(m) = applied["metadata"].as_object_mut() {
            m.remove("managedFields");
            m.remove("resourceVersion");
            m.remove("uid");
            m.remove("creationTimestamp");
        }
        let set = managed::leaves(&managed::field_set(&applied, rt.kind));
        let Some(old) = old else {
            if rt.namespaced && st.get(0, "", ns).is_none() {
                return Err(ApiError::not_found(&RESOURCES[0], ns));
            }
            let w =
                self.shared
                    .commit(st, t.rt_idx, ns, None, applied, opts, Ownership::Apply(set))?;
            return Ok(with_warnings(json_resp(201, &w.object), &w.warnings));
        };
        let entries = managed::entries(&old);
        if !force {
            let conflicts = managed::conflicts(&entries, &opts.manager, &set, &old, &applied);
            if !conflicts.is_empty() {
                return Err(ApiError::apply_conflict(rt, name, &conflicts));
            }
        }
        let mut merged = patch::apply_merge(&old, &applied, rt.kind, &mut Vec::new());
        // Fields this manager applied before and no longer applies, that nobody else owns, go.
        if let Some(mine) = entries
            .iter()
            .find(|e| e.manager == opts.manager && e.operation == "Apply")
        {
            for p in &mine.fields {
                let owned_elsewhere = entries.iter().any(|e| {
                    !(e.manager == opts.manager && e.operation == "Apply") && e.fields.contains(p)
                });
                if !set.contains(p) && !owned_elsewhere {
                    managed::remove_at(&mut merged, p);
                }
            }
        }
        let w: Written = self.shared.commit(
            st,
            t.rt_idx,
            ns,
            Some(&old),
            merged,
            opts,
            Ownership::Apply(set),
        )?;
        Ok(with_warnings(json_resp(200, &w.object), &w.warnings))
    }

    fn handle_delete(&self, req: &Req, t: &Target, q: &Query) -> Result<Resp, ApiError> {
        let rt = &RESOURCES[t.rt_idx];
        let ns = t.ns.clone().unwrap_or_default();
        let name = t.name.clone().unwrap_or_default();
        let options: Value = if req.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&req.body).unwrap_or(Value::Null)
        };
        let dry_run = q.dry_run()
            || options["dryRun"]
                .as_array()
                .is_some_and(|a| a.iter().any(|v| v == "All"));
        let mut st = self.shared.lock();
        let obj = st
            .get(t.rt_idx, &ns, &name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, &name))?;
        let pre = &options["preconditions"];
        if let Some(uid) = pre["uid"].as_str()
            && obj["metadata"]["uid"].as_str() != Some(uid)
        {
            return Err(ApiError::conflict(
                rt,
                &name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    obj["metadata"]["uid"].as_str().unwrap_or_default()
                ),
            ));
        }
        if let Some(rv) = pre["resourceVersion"].as_str()
            && obj["metadata"]["resourceVersion"].as_str() != Some(rv)
        {
            return Err(ApiError::conflict(
                rt,
                &name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    obj["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or_default()
                ),
            ));
        }
        if !dry_run {
            self.shared.remove(&mut st, t.rt_idx, &ns, &name);
        }
        let uid = obj["metadata"]["uid"].as_str().unwrap_or_default();
        Ok(json_resp(200, &status::deleted(rt, &name, uid)))
    }

    fn logs(&self, t: &Target, q: &Query) -> Result<Resp, ApiError> {
        let rt = &RESOURCES[t.rt_idx];
        let ns = t.ns.clone().unwrap_or_default();
        let name = t.name.clone().unwrap_or_default();
        let st = self.shared.lock();
        let pod = st
            .get(t.rt_idx, &ns, &name)
            .ok_or_else(|| ApiError::not_found(rt, &name))?;
        let containers: Vec<&str> = pod["spec"]["containers"]
            .as_array()
            .map(|a| a.iter().filter_map(|c| c["name"].as_str()).collect())
            .unwrap_or_default();
        let container = match q.get("container") {
            Some(c) if containers.contains(&c) => c.to_owned(),
            Some(c) => {
                return Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {name}"
                )));
            }
            None if containers.len() == 1 => containers[0].to_owned(),
            None => {
                return Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    containers.join(" ")
                )));
            }
        };
        let started = pod["status"]["startTime"].as_str().unwrap_or_default();
        let lines = [
            format!("{started} sandbox: container {container} of pod {ns}/{name} started"),
            format!("{started} sandbox: container {container} is running"),
        ];
        let tail = q
            .get("tailLines")
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(lines.len());
        let text =
            lines[lines.len().saturating_sub(tail)..]
                .iter()
                .fold(String::new(), |mut acc, l| {
                    acc.push_str(l);
                    acc.push('\n');
                    acc
                });
        Ok(respond(200, "text/plain", text))
    }

    #[allow(
        clippy::too_many_lines,
        reason = "replay and live phases of one stream"
    )]
    fn watch(&self, t: &Target, q: &Query) -> Result<Resp, ApiError> {
        let rt = &RESOURCES[t.rt_idx];
        let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or_default())?;
        let fields = FieldSelector::parse(q.get("fieldSelector").unwrap_or_default())?;
        let timeout = q
            .get("timeoutSeconds")
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(DEFAULT_WATCH_SECONDS);
        let since: Option<u64> = q
            .get("resourceVersion")
            .and_then(|s| s.parse().ok())
            .filter(|rv| *rv > 0);
        let send_initial = q.flag("sendInitialEvents");
        let ns = t.ns.clone();
        let rt_idx = t.rt_idx;
        let selected = move |ev_rt: usize, ev_ns: &str, obj: &Value| {
            ev_rt == rt_idx
                && ns.as_deref().is_none_or(|n| n == ev_ns)
                && matches_selectors(obj, &labels, &fields)
        };
        let mut sub = self.shared.events.subscribe();
        let (initial, mut last_rv) = {
            let st = self.shared.lock();
            let mut lines = Vec::new();
            match since {
                Some(rv) if !send_initial => {
                    let oldest = st.log.front().map_or(st.rv + 1, |e| e.rv);
                    if rv + 1 < oldest && rv < st.rv {
                        let gone = ApiError {
                            code: 410,
                            reason: "Expired",
                            message: format!("too old resource version: {rv} ({})", oldest - 1),
                            details: None,
                        };
                        lines.push(event_line("ERROR", &gone.to_status()));
                    } else {
                        for ev in st.log.iter().filter(|e| e.rv > rv) {
                            if selected(ev.rt, &ev.namespace, &ev.object) {
                                lines.push(event_line(ev.kind, &ev.object));
                            }
                        }
                    }
                }
                _ => {
                    for ((r, n, _), obj) in
                        st.objects.range((rt_idx, String::new(), String::new())..)
                    {
                        if *r != rt_idx {
                            break;
                        }
                        if selected(*r, n, obj) {
                            lines.push(event_line("ADDED", obj));
                        }
                    }
                    if send_initial {
                        let bookmark = json!({"kind": rt.kind, "apiVersion": rt.group_version(),
                            "metadata": {"resourceVersion": st.rv.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}});
                        lines.push(event_line("BOOKMARK", &bookmark));
                    }
                }
            }
            (lines, st.rv)
        };
        let (tx, rx) = mpsc::channel::<Bytes>(64);
        tokio::spawn(async move {
            for line in initial {
                if tx.send(line).await.is_err() {
                    return;
                }
            }
            let deadline = tokio::time::sleep(Duration::from_secs(timeout));
            tokio::pin!(deadline);
            loop {
                let ev: Arc<Event> = tokio::select! {
                    () = &mut deadline => return,
                    () = tx.closed() => return,
                    ev = sub.recv() => match ev {
                        Ok(ev) => ev,
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            let gone = ApiError { code: 410, reason: "Expired", message: "watch fell behind; re-list".into(), details: None };
                            let _ = tx.send(event_line("ERROR", &gone.to_status())).await;
                            return;
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                };
                if ev.rv <= last_rv {
                    continue;
                }
                last_rv = ev.rv;
                if selected(ev.rt, &ev.namespace, &ev.object)
                    && tx.send(event_line(ev.kind, &ev.object)).await.is_err()
                {
                    return;
                }
            }
        });
        let mut r = Response::new(ResponseBody::stream(rx));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Ok(r)
    }
}
