//! The few calls of Consul's HTTP API the adapter makes, with `reqwest`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{ConsulOptions, Error};

/// A client of one agent's HTTP API.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    pub(crate) opts: ConsulOptions,
    http: reqwest::Client,
}

/// A Go duration string (`"1500ms"`), as Consul reads them.
fn go_duration(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

/// `PUT /v1/agent/service/register`'s body (the fields the adapter sets).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Registration {
    #[serde(rename = "ID")]
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) address: String,
    pub(crate) port: u16,
    pub(crate) tags: Vec<String>,
    pub(crate) weights: Weights,
    pub(crate) check: TtlCheck,
}

/// A service's weights: the share of traffic while its checks pass, and while they warn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Weights {
    pub(crate) passing: i64,
    pub(crate) warning: i64,
}

/// A TTL check registered with the service, passing from the start.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct TtlCheck {
    #[serde(rename = "CheckID")]
    pub(crate) check_id: String,
    pub(crate) name: String,
    #[serde(rename = "TTL")]
    pub(crate) ttl: String,
    pub(crate) status: &'static str,
    pub(crate) deregister_critical_service_after: String,
}

impl TtlCheck {
    /// The check of service `id`, with the options' TTL.
    pub(crate) fn of(id: &str, opts: &ConsulOptions) -> Self {
        Self {
            check_id: check_id(id),
            name: "gannet TTL".into(),
            ttl: go_duration(opts.ttl),
            status: "passing",
            deregister_critical_service_after: go_duration(opts.deregister_critical_after),
        }
    }
}

/// The ID of the check registered with service `id`.
pub(crate) fn check_id(service_id: &str) -> String {
    format!("service:{service_id}")
}

/// One entry of `GET /v1/health/service/{service}`, read leniently: whatever another tool
/// registered, one bad entry must not hide the others.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct HealthEntry {
    #[serde(default)]
    pub(crate) node: Option<Node>,
    pub(crate) service: Option<Service>,
}

/// The node a service runs on.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Node {
    #[serde(default)]
    pub(crate) address: String,
}

/// A registered service instance.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Service {
    #[serde(rename = "ID", default)]
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) address: String,
    #[serde(default)]
    pub(crate) port: i64,
    #[serde(default)]
    pub(crate) tags: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) weights: Option<Weights>,
}

impl Api {
    pub(crate) fn new(opts: ConsulOptions) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(opts.connect_timeout)
            .build()
            .unwrap_or_default();
        Self { opts, http }
    }

    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        timeout: Duration,
    ) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.opts.endpoint))
            .timeout(timeout);
        if let Some(t) = &self.opts.token {
            req = req.header("X-Consul-Token", t);
        }
        req
    }

    /// Sends `req`; an error status is an error carrying what Consul said.
    async fn send(what: &str, req: reqwest::RequestBuilder) -> Result<reqwest::Response, Error> {
        let http = |source| Error::Http {
            what: what.to_string(),
            source,
        };
        let resp = req.send().await.map_err(http)?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        Err(Error::Status {
            what: what.to_string(),
            status: status.as_u16(),
            body: body.trim().to_string(),
        })
    }

    /// `PUT path` with an optional JSON body.
    pub(crate) async fn put(
        &self,
        what: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(), Error> {
        let mut req = self.request(reqwest::Method::PUT, path, self.opts.request_timeout);
        if let Some(body) = body {
            req = req.header("Content-Type", "application/json").body(body);
        }
        Self::send(what, req).await.map(drop)
    }

    /// Registers (or registers again: the call is idempotent) a service with its check.
    pub(crate) async fn register(&self, reg: &Registration) -> Result<(), Error> {
        let body = serde_json::to_vec(reg).map_err(|e| Error::Invalid(e.to_string()))?;
        self.put(
            &format!("registering {}", reg.id),
            "/v1/agent/service/register",
            Some(body),
        )
        .await
    }

    /// Marks the TTL check of service `id` passing.
    pub(crate) async fn pass(&self, id: &str) -> Result<(), Error> {
        self.put(
            &format!("passing the check of {id}"),
            &format!("/v1/agent/check/pass/{}", check_id(id)),
            None,
        )
        .await
    }

    /// Deregisters service `id` from the agent.
    pub(crate) async fn deregister(&self, id: &str) -> Result<(), Error> {
        self.put(
            &format!("deregistering {id}"),
            &format!("/v1/agent/service/deregister/{id}"),
            None,
        )
        .await
    }

    /// The passing instances of `service` and the index of the answer; with `index`, waits
    /// (up to the options' `wait`) until they change past it.
    pub(crate) async fn health(
        &self,
        service: &str,
        index: Option<u64>,
    ) -> Result<(Vec<HealthEntry>, u64), Error> {
        let mut path = format!("/v1/health/service/{service}?passing=true");
        if let Some(dc) = &self.opts.datacenter {
            path.push_str("&dc=");
            path.push_str(dc);
        }
        let mut timeout = self.opts.request_timeout;
        if let Some(index) = index {
            path.push_str(&format!(
                "&index={index}&wait={}",
                go_duration(self.opts.wait)
            ));
            // Consul adds up to wait/16 of jitter.
            timeout += self.opts.wait + self.opts.wait / 16;
        }
        let what = format!("reading the instances of {service}");
        let resp = Self::send(&what, self.request(reqwest::Method::GET, &path, timeout)).await?;
        let index = resp
            .headers()
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let body = resp.bytes().await.map_err(|source| Error::Http {
            what: what.clone(),
            source,
        })?;
        let entries = serde_json::from_slice(&body).map_err(|e| Error::Decode {
            what,
            why: e.to_string(),
        })?;
        Ok((entries, index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registration_is_the_json_consul_reads() {
        let opts = ConsulOptions::new().ttl(Duration::from_secs(3));
        let reg = Registration {
            id: "echo:127.0.0.1:8888".into(),
            name: "echo".into(),
            address: "127.0.0.1".into(),
            port: 8888,
            tags: vec!["zone:a".into()],
            weights: Weights {
                passing: 7,
                warning: 7,
            },
            check: TtlCheck::of("echo:127.0.0.1:8888", &opts),
        };
        let v: serde_json::Value = serde_json::to_value(&reg).unwrap();
        assert_eq!(v["ID"], "echo:127.0.0.1:8888");
        assert_eq!(v["Port"], 8888);
        assert_eq!(v["Tags"][0], "zone:a");
        assert_eq!(v["Weights"]["Passing"], 7);
        assert_eq!(v["Check"]["CheckID"], "service:echo:127.0.0.1:8888");
        assert_eq!(v["Check"]["TTL"], "3000ms");
        assert_eq!(v["Check"]["Status"], "passing");
        assert_eq!(v["Check"]["DeregisterCriticalServiceAfter"], "60000ms");
    }

    #[test]
    fn health_entries_missing_fields_still_parse() {
        let body = br#"[{"Node":{"Address":"10.0.0.1"},"Service":{"ID":"a","Port":80}},
                       {"Service":{"ID":"b","Address":"10.0.0.2","Port":81,"Tags":null,
                                   "Weights":{"Passing":3,"Warning":1}}},
                       {"Node":{}}]"#;
        let entries: Vec<HealthEntry> = serde_json::from_slice(body).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].node.as_ref().unwrap().address, "10.0.0.1");
        assert_eq!(
            entries[1]
                .service
                .as_ref()
                .unwrap()
                .weights
                .unwrap()
                .passing,
            3
        );
        assert!(entries[2].service.is_none());
    }
}
