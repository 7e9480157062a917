//! Redfish (DMTF DSP0266): the system's `PowerState`,
//! `ComputerSystem.Reset`, and the `Boot` override, over HTTP(S) with basic
//! authentication.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use super::{BmcError, BmcRecord, NextBoot, Power, PowerState};

/// One request to a BMC, whole (BMCs are slow, but not this slow).
const REQUEST_WITHIN: Duration = Duration::from_secs(20);

pub struct Redfish {
    base: String,
    system: Option<String>,
    username: Option<String>,
    password: Option<String>,
    client: Client,
    /// The system's URL, found once.
    system_url: OnceCell<String>,
}

impl Redfish {
    pub fn new(record: &BmcRecord, password: Option<String>) -> Result<Redfish, BmcError> {
        let base = record.address.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(BmcError::Config {
                bmc: base,
                message: "a redfish address is the BMC's URL (https://host or http://host:port)"
                    .into(),
            });
        }
        let client = Client::builder()
            .timeout(REQUEST_WITHIN)
            .danger_accept_invalid_certs(record.insecure)
            .build()
            .map_err(|e| BmcError::Config {
                bmc: base.clone(),
                message: format!("cannot make an HTTP client: {e}"),
            })?;
        Ok(Redfish {
            base,
            system: record.system.clone(),
            username: record.username.clone(),
            password,
            client,
            system_url: OnceCell::new(),
        })
    }

    /// Sends one request; the JSON answer (`Null` for none).
    async fn call(
        &self,
        what: &'static str,
        method: Method,
        url: &str,
        body: Option<Value>,
    ) -> Result<Value, BmcError> {
        let mut req = self.client.request(method, url);
        if let Some(user) = &self.username {
            req = req.basic_auth(user, self.password.as_deref());
        }
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let unreachable = |e: reqwest::Error| BmcError::Unreachable {
            bmc: self.base.clone(),
            what,
            // Without the URL's credentials, which reqwest's text may carry.
            cause: e.without_url().to_string(),
        };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        let text = resp.text().await.map_err(unreachable)?;
        if !status.is_success() {
            return Err(BmcError::Refused {
                bmc: self.base.clone(),
                what,
                answer: format!("HTTP {status}: {}", redfish_message(&text)),
            });
        }
        if status == StatusCode::NO_CONTENT || text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| BmcError::Refused {
            bmc: self.base.clone(),
            what,
            answer: format!("not JSON: {e}"),
        })
    }

    async fn system_url(&self) -> Result<&str, BmcError> {
        self.system_url
            .get_or_try_init(|| async {
                if let Some(id) = &self.system {
                    return Ok(format!("{}/redfish/v1/Systems/{id}", self.base));
                }
                let list = self
                    .call(
                        "list the systems",
                        Method::GET,
                        &format!("{}/redfish/v1/Systems", self.base),
                        None,
                    )
                    .await?;
                let members: Vec<&str> = list["Members"]
                    .as_array()
                    .map(|m| m.iter().filter_map(|s| s["@odata.id"].as_str()).collect())
                    .unwrap_or_default();
                match members.as_slice() {
                    [one] => Ok(format!("{}{one}", self.base)),
                    _ => Err(BmcError::Config {
                        bmc: self.base.clone(),
                        message: format!(
                            "it has {} systems ({}): name one with bmc.system",
                            members.len(),
                            members.join(", ")
                        ),
                    }),
                }
            })
            .await
            .map(String::as_str)
    }

    async fn system(&self, what: &'static str) -> Result<Value, BmcError> {
        let url = self.system_url().await?.to_string();
        self.call(what, Method::GET, &url, None).await
    }

    async fn reset_to(&self, reset_type: &str) -> Result<(), BmcError> {
        let url = format!("{}/Actions/ComputerSystem.Reset", self.system_url().await?);
        self.call(
            "ComputerSystem.Reset",
            Method::POST,
            &url,
            Some(json!({ "ResetType": reset_type })),
        )
        .await
        .map(drop)
    }
}

/// The message of a Redfish error answer, else its text (cut short).
fn redfish_message(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| text.chars().take(200).collect())
}

#[async_trait]
impl Power for Redfish {
    fn name(&self) -> String {
        self.base.clone()
    }

    async fn state(&self) -> Result<PowerState, BmcError> {
        let system = self.system("read the power state").await?;
        match system["PowerState"].as_str() {
            // PoweringOff is still drawing power; PoweringOn is on its way.
            Some("On" | "PoweringOn" | "PoweringOff") => Ok(PowerState::On),
            Some("Off") => Ok(PowerState::Off),
            other => Err(BmcError::Refused {
                bmc: self.base.clone(),
                what: "read the power state",
                answer: format!("PowerState is {other:?}"),
            }),
        }
    }

    async fn on(&self) -> Result<(), BmcError> {
        self.reset_to("On").await
    }

    async fn off(&self) -> Result<(), BmcError> {
        self.reset_to("ForceOff").await
    }

    async fn reset(&self) -> Result<(), BmcError> {
        self.reset_to("ForceRestart").await
    }

    async fn set_pxe_once(&self) -> Result<(), BmcError> {
        let url = self.system_url().await?.to_string();
        self.call(
            "set the one-time PXE boot",
            Method::PATCH,
            &url,
            Some(json!({ "Boot": {
                "BootSourceOverrideTarget": "Pxe",
                "BootSourceOverrideEnabled": "Once",
            }})),
        )
        .await
        .map(drop)
    }

    async fn next_boot(&self) -> Result<NextBoot, BmcError> {
        let system = self.system("read the boot override back").await?;
        let boot = &system["Boot"];
        let target = boot["BootSourceOverrideTarget"].as_str().unwrap_or("none");
        let enabled = boot["BootSourceOverrideEnabled"].as_str().unwrap_or("none");
        // "Continuous" also boots from the network next; some BMCs keep
        // only that. "Disabled" means the override is not in force.
        Ok(NextBoot {
            pxe: target == "Pxe" && enabled != "Disabled",
            said: format!("BootSourceOverrideTarget {target}, BootSourceOverrideEnabled {enabled}"),
        })
    }
}
