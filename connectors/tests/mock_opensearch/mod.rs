//! A mock of the subset of the OpenSearch 2.x REST API that Sluice's
//! OpenSearch source uses, on a bare `TcpListener` (no OpenSearch server can
//! be installed where these tests run):
//!
//! * `POST /<index>/_search/point_in_time?keep_alive=<time>`: creates a point
//!   in time over a snapshot of the matching indices; answers
//!   `{"pit_id", "_shards", "creation_time"}`.
//! * `POST|GET /_search` with `pit`: `size`, `query` (`bool` with
//!   `filter`/`must`/`must_not` of `range`, `term` and `terms`), `sort`,
//!   `_source: false` (hits without their document),
//!   `search_after`, `track_total_hits`; answers `{"pit_id", "took",
//!   "timed_out", "_shards", "hits": {"total", "max_score", "hits": [{"_index",
//!   "_id", "_score", "_source", "sort"}]}}`. An expired point in time answers
//!   404 `search_phase_execution_exception` caused by
//!   `search_context_missing_exception` ("No search context found for id").
//! * `POST /<index>/_search` without `pit` (the lag count, `size: 0`),
//!   with `aggs` of one `max` aggregation on `timestamp`; answers
//!   `"aggregations": {"<name>": {"value": <epoch ms as a double, or null>,
//!   "value_as_string": "<date>"}}`.
//! * `DELETE /_search/point_in_time` with `{"pit_id": [...]}`; answers
//!   `{"pits": [{"pit_id", "successful"}]}`.
//!
//! Every request body is checked against those documented shapes (unknown
//! keys, a `pit` search with an index in the path, a `sort` not on a mapped
//! field, a malformed `search_after` are refused with a 400 as OpenSearch
//! would, and recorded as a violation the tests assert is empty). Faults are
//! injected on demand: status replies for the next searches (429, 503) and
//! expiring every point in time.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{Value, json};

/// One request as received.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    pub body: Value,
    /// When it arrived.
    pub at: std::time::Instant,
}

#[derive(Clone, Debug)]
pub struct Doc {
    pub index: String,
    pub id: String,
    pub source: Value,
}

#[derive(Default)]
pub struct State {
    pub docs: Vec<Doc>,
    /// Open points in time: id → snapshot of documents.
    pits: HashMap<String, Vec<Doc>>,
    next_pit: u64,
    /// Statuses to answer to the next `_search` requests, in order.
    pub faults: VecDeque<u16>,
    pub requests: Vec<Request>,
    /// Requests whose shape is not what OpenSearch 2.x documents.
    pub violations: Vec<String>,
}

/// The mock on a free loopback port; stopped on drop.
pub struct MockOpenSearch {
    pub url: String,
    pub state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MockOpenSearch {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        listener.set_nonblocking(true).unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, stopped) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let st = st.clone();
                        std::thread::spawn(move || serve(stream, &st));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Self { url, state, stop, thread: Some(thread) }
    }

    /// Indexes a Wazuh alert (its `_id` is the alert's `id`).
    pub fn index(&self, index: &str, source: Value) {
        let id = source["id"].as_str().expect("alert id").to_string();
        self.state.lock().unwrap().docs.push(Doc { index: index.into(), id, source });
    }

    pub fn fail_next(&self, statuses: &[u16]) {
        self.state.lock().unwrap().faults.extend(statuses);
    }

    /// Every open point in time expires now.
    pub fn expire_pits(&self) {
        self.state.lock().unwrap().pits.clear();
    }

    pub fn open_pits(&self) -> usize {
        self.state.lock().unwrap().pits.len()
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn searches(&self) -> Vec<Request> {
        self.requests().into_iter().filter(|r| r.path == "/_search").collect()
    }

    pub fn violations(&self) -> Vec<String> {
        self.state.lock().unwrap().violations.clone()
    }
}

impl Drop for MockOpenSearch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn respond(stream: &mut TcpStream, status: u16, body: &Value) {
    let body = body.to_string();
    let head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json; charset=UTF-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
    let _ = stream.flush();
}

fn serve(stream: TcpStream, state: &Mutex<State>) {
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; len];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let (path, qs) = target.split_once('?').unwrap_or((&target, ""));
    let query: BTreeMap<String, String> = qs
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    let body: Value =
        if body.is_empty() { Value::Null } else { serde_json::from_slice(&body).unwrap_or(json!("<not json>")) };
    let request = Request { method, path: path.to_string(), query, headers, body, at: std::time::Instant::now() };
    let (status, answer) = {
        let mut st = state.lock().unwrap();
        st.requests.push(request.clone());
        handle(&mut st, &request)
    };
    let mut stream = stream;
    respond(&mut stream, status, &answer);
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

fn error(status: u16, kind: &str, reason: &str) -> (u16, Value) {
    (
        status,
        json!({"error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason}, "status": status}),
    )
}

fn bad(st: &mut State, reason: String) -> (u16, Value) {
    st.violations.push(reason.clone());
    error(400, "parsing_exception", &reason)
}

fn shards() -> Value {
    json!({"total": 1, "successful": 1, "skipped": 0, "failed": 0})
}

/// `wazuh-alerts-4.x-*` against an index name.
fn matches_pattern(pattern: &str, index: &str) -> bool {
    pattern.split(',').any(|p| match p.strip_suffix('*') {
        Some(prefix) => index.starts_with(prefix),
        None => p == index,
    })
}

fn field<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(doc, |v, k| v.get(k))
}

fn timestamp_ms(doc: &Value) -> i64 {
    let s = doc["timestamp"].as_str().expect("timestamp");
    sluice_operators::time::parse_timestamp(s).expect("parsable timestamp")
}

/// Evaluates a query clause; `Err` for what the mock (and Sluice) does not use.
fn eval(clause: &Value, doc: &Value) -> Result<bool, String> {
    let obj = clause.as_object().ok_or("a query clause must be an object")?;
    if obj.len() != 1 {
        return Err(format!("a query clause has exactly one key: {clause}"));
    }
    let (kind, body) = obj.iter().next().unwrap();
    match kind.as_str() {
        "bool" => {
            let b = body.as_object().ok_or("bool takes an object")?;
            for k in b.keys() {
                if !["filter", "must", "must_not", "should"].contains(&k.as_str()) {
                    return Err(format!("unknown bool key {k}"));
                }
            }
            let list = |k: &str| -> Result<Vec<Value>, String> {
                match b.get(k) {
                    None => Ok(vec![]),
                    Some(Value::Array(a)) => Ok(a.clone()),
                    Some(v @ Value::Object(_)) => Ok(vec![v.clone()]),
                    Some(v) => Err(format!("bool.{k} takes an object or array, not {v}")),
                }
            };
            for c in list("filter")?.iter().chain(list("must")?.iter()) {
                if !eval(c, doc)? {
                    return Ok(false);
                }
            }
            for c in &list("must_not")? {
                if eval(c, doc)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        "match_all" => Ok(true),
        "terms" => {
            let (f, v) = body.as_object().and_then(|m| m.iter().next()).ok_or("terms takes {field: [values]}")?;
            let want = v.as_array().ok_or("terms takes an array of values")?;
            Ok(field(doc, f).is_some_and(|g| want.contains(g)))
        }
        "term" => {
            let (f, v) = body.as_object().and_then(|m| m.iter().next()).ok_or("term takes {field: value}")?;
            let want = v.get("value").unwrap_or(v);
            let got = field(doc, f);
            Ok(match (got, want) {
                (Some(Value::Array(a)), w) => a.iter().any(|x| x == w),
                (Some(g), w) => g == w || g.as_str().is_some_and(|s| w.as_str() == Some(s)),
                (None, _) => false,
            })
        }
        "range" => {
            let (f, r) = body.as_object().and_then(|m| m.iter().next()).ok_or("range takes {field: {...}}")?;
            let r = r.as_object().ok_or("range bounds must be an object")?;
            for k in r.keys() {
                if !["gte", "gt", "lte", "lt", "format"].contains(&k.as_str()) {
                    return Err(format!("unknown range key {k}"));
                }
            }
            let value = if f == "timestamp" {
                if r.get("format").and_then(Value::as_str) != Some("epoch_millis") {
                    return Err("range on timestamp with numbers needs format epoch_millis".into());
                }
                timestamp_ms(doc) as f64
            } else {
                match field(doc, f).and_then(|v| v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))) {
                    Some(v) => v,
                    None => return Ok(false),
                }
            };
            let bound = |k: &str| r.get(k).map(|v| v.as_f64().ok_or(format!("range {k} must be a number: {v}")));
            for k in ["gte", "gt", "lte", "lt"] {
                if let Some(b) = bound(k) {
                    let b = b?;
                    let inside = match k {
                        "gte" => value >= b,
                        "gt" => value > b,
                        "lte" => value <= b,
                        _ => value < b,
                    };
                    if !inside {
                        return Ok(false);
                    }
                }
            }
            Ok(true)
        }
        other => Err(format!("query {other} is not implemented by the mock")),
    }
}

fn handle(st: &mut State, r: &Request) -> (u16, Value) {
    let segments: Vec<&str> = r.path.trim_start_matches('/').split('/').collect();
    match (r.method.as_str(), segments.as_slice()) {
        ("POST", [index, "_search", "point_in_time"]) => {
            if !r.query.contains_key("keep_alive") {
                return bad(st, "create PIT: keep_alive is required".into());
            }
            if !(r.body.is_null() || r.body.as_object().is_some_and(|m| m.is_empty())) {
                return bad(st, format!("create PIT takes no body: {}", r.body));
            }
            st.next_pit += 1;
            let id = format!("o463QQEPbXktaW5kZXg{}", st.next_pit);
            let snapshot: Vec<Doc> = st.docs.iter().filter(|d| matches_pattern(index, &d.index)).cloned().collect();
            st.pits.insert(id.clone(), snapshot);
            (200, json!({"pit_id": id, "_shards": shards(), "creation_time": 1_658_146_050_064_i64}))
        }
        ("DELETE", ["_search", "point_in_time"]) => {
            let Some(ids) = r.body.get("pit_id").and_then(Value::as_array) else {
                return bad(st, format!("delete PIT: body must be {{\"pit_id\": [...]}}: {}", r.body));
            };
            let pits: Vec<Value> = ids
                .iter()
                .map(|id| {
                    let id = id.as_str().unwrap_or_default().to_string();
                    let ok = st.pits.remove(&id).is_some();
                    json!({"pit_id": id, "successful": ok})
                })
                .collect();
            (200, json!({"pits": pits}))
        }
        ("POST" | "GET", ["_search"]) => search(st, r, None),
        ("POST" | "GET", [index, "_search"]) => {
            if r.body.get("pit").is_some() {
                return bad(st, "a search with pit must not name an index in the path".into());
            }
            let index = index.to_string();
            search(st, r, Some(index))
        }
        _ => bad(st, format!("{} {} is not an endpoint of the mock", r.method, r.path)),
    }
}

fn search(st: &mut State, r: &Request, index: Option<String>) -> (u16, Value) {
    let Some(body) = r.body.as_object() else { return bad(st, "search body must be an object".into()) };
    for k in body.keys() {
        if !["size", "query", "pit", "sort", "search_after", "track_total_hits", "_source", "aggs"]
            .contains(&k.as_str())
        {
            return bad(st, format!("search: unknown key {k}"));
        }
    }
    if let Some(status) = st.faults.pop_front() {
        return match status {
            429 => error(429, "circuit_breaking_exception", "[parent] Data too large"),
            s => error(s, "unavailable_shards_exception", "service unavailable"),
        };
    }
    let size = match body.get("size") {
        None => 10,
        Some(v) => match v.as_u64() {
            Some(n) => n as usize,
            None => return bad(st, format!("size must be a number: {v}")),
        },
    };
    let (docs, pit_id) = match (&index, body.get("pit")) {
        (Some(index), None) => {
            (st.docs.iter().filter(|d| matches_pattern(index, &d.index)).cloned().collect::<Vec<_>>(), None)
        }
        (None, Some(pit)) => {
            let (Some(id), Some(_)) =
                (pit.get("id").and_then(Value::as_str), pit.get("keep_alive").and_then(Value::as_str))
            else {
                return bad(st, format!("pit must be {{\"id\": string, \"keep_alive\": string}}: {pit}"));
            };
            match st.pits.get(id) {
                Some(docs) => (docs.clone(), Some(id.to_string())),
                None => {
                    let reason = format!("No search context found for id [{id}]");
                    return (
                        404,
                        json!({"error": {
                            "root_cause": [{"type": "search_context_missing_exception", "reason": reason}],
                            "type": "search_phase_execution_exception",
                            "reason": "all shards failed",
                            "phase": "query",
                            "grouped": true,
                            "failed_shards": [{"shard": -1, "index": null, "reason": {"type": "search_context_missing_exception", "reason": reason}}]
                        }, "status": 404}),
                    );
                }
            }
        }
        (None, None) => return bad(st, "a search without an index needs a pit".into()),
        (Some(_), Some(_)) => unreachable!(),
    };
    // Sort: the only sort Sluice may ask for (fields of the Wazuh template).
    let sorted = body.get("sort").is_some();
    if let Some(sort) = body.get("sort") {
        let want = json!([{"timestamp": {"order": "asc"}}, {"id": {"order": "asc"}}]);
        if sort != &want {
            return bad(st, format!("sort must be {want}, got {sort}"));
        }
    }
    let after = match body.get("search_after") {
        None => None,
        Some(v) => match v.as_array().map(Vec::as_slice) {
            Some([t, id]) if t.is_i64() && id.is_string() && sorted => {
                Some((t.as_i64().unwrap(), id.as_str().unwrap().to_string()))
            }
            _ => return bad(st, format!("search_after must be [epoch_millis, id] matching sort: {v}")),
        },
    };
    // Aggregations: one `max` on `timestamp`, by the name asked for.
    let max_of = match body.get("aggs") {
        None => None,
        Some(aggs) => match aggs.as_object().map(|o| o.iter().collect::<Vec<_>>()).as_deref() {
            Some([(name, agg)]) if *agg == &json!({"max": {"field": "timestamp"}}) => Some(name.to_string()),
            _ => return bad(st, format!("aggs: the mock takes one max on timestamp, not {aggs}")),
        },
    };
    let with_source = match body.get("_source") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(v) => return bad(st, format!("_source: the mock takes true or false, not {v}")),
    };
    let query = body.get("query").cloned().unwrap_or(json!({"match_all": {}}));
    let mut matched = Vec::new();
    for d in &docs {
        match eval(&query, &d.source) {
            Ok(true) => matched.push(d.clone()),
            Ok(false) => {}
            Err(e) => return bad(st, format!("query: {e}")),
        }
    }
    let total = matched.len();
    let newest = matched.iter().map(|d| timestamp_ms(&d.source)).max();
    matched.sort_by_key(|d| (timestamp_ms(&d.source), d.source["id"].as_str().unwrap_or_default().to_string()));
    let page: Vec<Value> = matched
        .into_iter()
        .filter(|d| {
            after.as_ref().is_none_or(|a| (timestamp_ms(&d.source), d.source["id"].as_str().unwrap().to_string()) > *a)
        })
        .take(size)
        .map(|d| {
            let mut hit = json!({"_index": d.index, "_id": d.id, "_score": null, "_source": d.source,
                   "sort": [timestamp_ms(&d.source), d.source["id"]]});
            if with_source == Some(false) {
                hit.as_object_mut().unwrap().remove("_source");
            }
            hit
        })
        .collect();
    let mut answer = json!({
        "took": 1,
        "timed_out": false,
        "_shards": shards(),
        "hits": {"total": {"value": total, "relation": "eq"}, "max_score": null, "hits": page}
    });
    if let Some(id) = pit_id {
        answer["pit_id"] = json!(id);
    }
    if let Some(name) = max_of {
        let value = match newest {
            Some(ms) => json!({"value": ms as f64, "value_as_string": timestamp_string(ms)}),
            None => json!({"value": null}),
        };
        answer["aggregations"] = json!({ name: value });
    }
    (200, answer)
}

/// `ms` as the Wazuh template's `timestamp` format.
fn timestamp_string(ms: i64) -> String {
    let (s, milli) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let days = s.div_euclid(86_400);
    let sod = s.rem_euclid(86_400);
    let (y, m, d) = sluice_operators::time::civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}+0000", sod / 3600, sod % 3600 / 60, sod % 60)
}

/// A Wazuh alert like /work/shared/data's sample, at `ms` with `id`.
pub fn alert(ms: i64, id: &str, tenant: &str, agent: &str, level: u32) -> Value {
    let ts = timestamp_string(ms);
    json!({
        "timestamp": ts,
        "rule": {"level": level, "description": "sshd: authentication failed.", "id": "5716",
                 "groups": ["syslog", "sshd", "authentication_failed"], "firedtimes": 1,
                 "mitre": {"id": ["T1110.001"], "tactic": ["Credential Access"], "technique": ["Password Guessing"]}},
        "agent": {"id": agent, "name": format!("host-{agent}"), "ip": "10.0.0.5"},
        "manager": {"name": tenant},
        "id": id,
        "full_log": format!("sshd[1]: Failed password for root from 203.0.113.9 port 4{id} ssh2"),
        "decoder": {"parent": "sshd", "name": "sshd"},
        "data": {"srcip": "203.0.113.9", "dstuser": "root"},
        "location": "journald"
    })
}
