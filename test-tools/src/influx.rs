//! A real InfluxDB 1.x (`influxd` from the Debian package `influxdb`) started by a test, on a
//! free port, with everything on disk in a temporary directory.

use std::collections::HashMap;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use sbc_sidecar::telemetry::AlertSettings;
use serde_json::Value;

pub struct Influxd {
    child: Child,
    dir: PathBuf,
    pub port: u16,
}

impl Influxd {
    /// Starts `influxd` with HTTP on 127.0.0.1:<free port> and everything on disk in a fresh
    /// temporary directory. Fails (never skips) when InfluxDB is not installed.
    pub fn start() -> Influxd {
        let binary = find_binary("influxd").unwrap_or_else(|| {
            panic!(
                "influxd not found: these tests need a real InfluxDB 1.x. Run `make services` \
                 (it installs the Debian package `influxdb`), or `apt-get install influxdb`."
            )
        });
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sbc-telemetry-influxd-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let config = format!(
            r#"reporting-disabled = true
bind-address = "127.0.0.1:{rpc}"
[meta]
  dir = "{d}/meta"
[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  query-log-enabled = false
[monitor]
  store-enabled = false
[http]
  bind-address = "127.0.0.1:{port}"
  log-enabled = false
[logging]
  level = "warn"
  suppress-logo = true
"#,
            rpc = free_port(),
            d = dir.display(),
        );
        let config_path = dir.join("influxd.conf");
        fs::write(&config_path, config).unwrap();
        let log = fs::File::create(dir.join("influxd.log")).unwrap();
        let child = Command::new(binary)
            .arg("-config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let influxd = Influxd { child, dir, port };
        influxd.wait_ready();
        influxd
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = ureq::get(format!("http://127.0.0.1:{}/ping", self.port)).call() {
                if r.status().as_u16() == 204 {
                    return;
                }
            }
            thread::sleep(Duration::from_millis(100));
        }
        let log = fs::read_to_string(self.dir.join("influxd.log")).unwrap_or_default();
        panic!("influxd did not answer /ping on port {} within 30 s; its log:\n{log}", self.port);
    }

    pub fn settings(&self) -> AlertSettings {
        AlertSettings { port: self.port, ..AlertSettings::new("127.0.0.1") }
    }

    /// The rows of `q` as column → value maps.
    pub fn query(&self, q: &str) -> Vec<HashMap<String, Value>> {
        self.try_query(q, &[]).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Times as integer nanoseconds instead of RFC 3339 strings.
    pub fn query_epoch_ns(&self, q: &str) -> Vec<HashMap<String, Value>> {
        self.try_query(q, &[("epoch", "ns")]).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_query(&self, q: &str, params: &[(&str, &str)]) -> Result<Vec<HashMap<String, Value>>, String> {
        let mut request =
            ureq::get(format!("http://127.0.0.1:{}/query", self.port)).query("db", "alerts").query("q", q);
        for (k, v) in params {
            request = request.query(k, v);
        }
        let mut response = request.call().unwrap();
        let json: Value = serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
        match json["results"][0]["error"].as_str() {
            None => {}
            // Before the writer has created it, the database is just empty.
            Some(e) if e.starts_with("database not found") => return Ok(Vec::new()),
            Some(_) => return Err(format!("{q}: {json}")),
        }
        let Some(series) = json["results"][0]["series"].as_array() else { return Ok(Vec::new()) };
        let mut rows = Vec::new();
        for s in series {
            let columns: Vec<String> =
                s["columns"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
            for values in s["values"].as_array().unwrap() {
                let values = values.as_array().unwrap();
                rows.push(columns.iter().cloned().zip(values.iter().cloned()).collect());
            }
        }
        Ok(rows)
    }

    /// Polls until `SELECT *` finds `n` points. Query errors count as "not yet": right after
    /// a `DROP DATABASE`, InfluxDB 1.6 answers some queries with "engine is closed".
    pub fn wait_for_count(&self, n: usize, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let count = self.try_query("SELECT * FROM alerts", &[]).map(|rows| rows.len());
            match count {
                Ok(count) if count >= n => return count,
                Ok(count) if Instant::now() > deadline => return count,
                Err(e) if Instant::now() > deadline => panic!("{e}"),
                _ => thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    pub fn post_query(&self, q: &str) {
        ureq::post(format!("http://127.0.0.1:{}/query", self.port)).send_form([("q", q)]).unwrap();
    }
}

impl Drop for Influxd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

pub fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| Path::new(p).is_file())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
