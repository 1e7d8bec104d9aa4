//! What joins the server's parts: the run host reads the registry's binaries and records the
//! runs it starts, the web UI lists the registry's workflows and schedules.

use std::sync::{Arc, Mutex};

use crate::sql::Conn;
use serde_json::Value;

use salt_runtime::model::RunId;
use salt_runtime::{Error, ErrorKind};

use crate::engine::WorkflowRef;
use crate::host::Binaries;
use crate::ui::{ScheduleInfo, WorkflowCatalog, WorkflowEntry, WorkflowVersion};
use crate::{db, schedule};

/// The registry in the server's tables, as the run host and the UI need it.
pub struct Registry {
    conn: Arc<Mutex<Conn>>,
}

impl Registry {
    /// The registry in `conn`.
    pub fn new(conn: Arc<Mutex<Conn>>) -> Self {
        Self { conn }
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Conn> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn store_error(e: crate::sql::Error) -> Error {
    Error::new(ErrorKind::Store, format!("the server's registry: {e}"))
}

impl Binaries for Registry {
    fn manifest(&self, binary: &str) -> salt_runtime::Result<Value> {
        db::binary_manifest(&self.conn(), binary)
            .map_err(store_error)?
            .ok_or_else(|| Error::new(ErrorKind::Usage, format!("no binary {binary} is registered")))
    }

    fn binary_of(&self, run: RunId) -> salt_runtime::Result<Option<String>> {
        Ok(db::run_version(&self.conn(), run).map_err(store_error)?.map(|v| v.binary))
    }

    fn record_run(&self, run: RunId, workflow: &WorkflowRef) -> salt_runtime::Result<()> {
        db::set_run_version(&self.conn(), run, &workflow.workflow, workflow.version).map_err(store_error)
    }
}

impl WorkflowCatalog for Registry {
    fn workflows(&self) -> Vec<WorkflowEntry> {
        let conn = self.conn();
        let latest = db::latest_versions(&conn).unwrap_or_default();
        latest
            .into_iter()
            .map(|v| {
                let versions = db::versions(&conn, &v.workflow).unwrap_or_default();
                let mut versions: Vec<WorkflowVersion> = versions
                    .into_iter()
                    .map(|w| WorkflowVersion {
                        reference: WorkflowRef { workflow: w.workflow, version: w.version, binary: w.binary },
                        registered_at: w.registered_at,
                        registered_by: None,
                    })
                    .collect();
                versions.sort_by_key(|w| w.reference.version);
                let sched = schedule::get(&conn, &v.workflow).ok().flatten();
                let info = sched.as_ref().and_then(|s| {
                    let cron = s.cron.clone()?;
                    let spec = s.spec()?;
                    let next = schedule::next_fires(&spec, 3)
                        .into_iter()
                        .map(|(zoned, utc)| (zoned.strftime("%Y-%m-%d %H:%M:%S %Z").to_string(), utc.to_string()))
                        .collect();
                    Some(ScheduleInfo { cron, timezone: s.timezone.clone(), next })
                });
                let default_input = sched
                    .as_ref()
                    .map(|s| s.input.clone())
                    .filter(|i| !i.is_null())
                    .or_else(|| v.manifest.get("default_input").cloned())
                    .unwrap_or(Value::Null);
                WorkflowEntry {
                    name: v.workflow.clone(),
                    doc: v.manifest.get("doc").and_then(Value::as_str).unwrap_or_default().to_string(),
                    versions,
                    input_schema: v.manifest.get("input_schema").cloned().unwrap_or(Value::Bool(true)),
                    default_input,
                    schedule: info,
                    paused: sched.is_some_and(|s| s.paused),
                }
            })
            .collect()
    }

    fn may_spawn(&self, workflow: &str, task: &str) -> bool {
        let conn = self.conn();
        let Ok(Some(v)) = db::latest_version(&conn, workflow) else { return false };
        let Ok(Some(manifest)) = db::binary_manifest(&conn, &v.binary) else { return false };
        ["tasks", "workflows"].iter().any(|list| {
            manifest.get(list).and_then(Value::as_array).is_some_and(|entries| {
                entries.iter().any(|e| {
                    e.get("name").and_then(Value::as_str) == Some(task)
                        && e.get("may_spawn").and_then(Value::as_bool).unwrap_or(false)
                })
            })
        })
    }

    fn set_paused(&self, workflow: &str, paused: bool) -> Result<(), String> {
        schedule::set_paused(&self.conn(), workflow, paused, jiff::Timestamp::now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
