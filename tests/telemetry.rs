//! Alerts and metrics against real parts: a real InfluxDB 1.x (`influxd`, Debian package
//! `influxdb`, started by each test on its own ports and data directory and killed at the end)
//! and real UDP / TCP sockets bound by the tests as the statsd server.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, UdpSocket};
use std::sync::{Mutex, Once};
use std::thread;
use std::time::{Duration, Instant};

use log::{LevelFilter, Log, Metadata, Record};
use sbc_sidecar::config::StatsProtocol;
use sbc_sidecar::telemetry::{Alert, AlertSettings, AlertWriter, Metrics, MetricsSettings, PingFailure};
use sbc_test_tools::influx::{free_port, Influxd};
use serde_json::Value;

fn text(row: &HashMap<String, Value>, column: &str) -> Option<String> {
    row.get(column).and_then(Value::as_str).map(str::to_string)
}

// ------------------------------------------------------------------------------------------
// Log capture, to check that drops are logged per state change, not per alert
// ------------------------------------------------------------------------------------------

struct Capture(Mutex<Vec<(String, String)>>);

impl Log for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &Record<'_>) {
        if let Ok(mut lines) = self.0.lock() {
            lines.push((record.target().to_string(), record.args().to_string()));
        }
    }
    fn flush(&self) {}
}

static CAPTURE: Capture = Capture(Mutex::new(Vec::new()));

fn capture_logs() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let _ = log::set_logger(&CAPTURE);
        log::set_max_level(LevelFilter::Info);
    });
}

fn alert_log_lines() -> Vec<String> {
    CAPTURE
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(target, _)| target.ends_with("telemetry::alert_writer"))
        .map(|(_, line)| line.clone())
        .collect()
}

// ------------------------------------------------------------------------------------------
// Alerts
// ------------------------------------------------------------------------------------------

#[test]
fn every_alert_of_the_spec_lands_in_influxdb_with_its_tags_and_no_undefined() {
    let influx = Influxd::start();
    // The timer never fires during the test: shutdown has to write them.
    let writer =
        AlertWriter::start(AlertSettings { flush_interval: Duration::from_secs(600), ..influx.settings() }).unwrap();
    let alerts = writer.sender();
    let sent = [
        Alert::account_device_limit("acc-1", 10),
        Alert::webhook_failure("acc-2", "https://hooks.example.com/reg?x=1", 404),
        Alert::webhook_connection_failure("acc 3,odd=sid", "http://127.0.10.1:3000/reg"),
        Alert::carrier_disabled("Carrier \"A\"", "car-1", Some("acc-4"), Some("sp-1")),
        Alert::carrier_deactivated("Reg trunk", "car-2", None, Some("sp-2")),
        Alert::options_ping_failed("192.0.2.10", Some(5060), "udp", PingFailure::Status(503), Some("acc-5"), None),
        Alert::options_ping_failed("192.0.2.11", None, "tcp", PingFailure::Error("connect refused"), None, None),
        Alert::options_ping_disabled("192.0.2.12", "Carrier B", "car-3", 403, Some(""), Some("sp-3")),
    ];
    for alert in sent.iter().cloned() {
        assert!(alerts.send(alert));
    }
    let stats = writer.shutdown();
    assert_eq!((stats.queued, stats.written, stats.dropped()), (8, 8, 0), "{stats:?}");

    let rows = influx.query("SELECT * FROM alerts");
    assert_eq!(rows.len(), 8, "{rows:?}");
    for row in &rows {
        for (column, value) in row {
            assert_ne!(value.as_str(), Some("undefined"), "column {column} of {row:?}");
        }
    }
    let by_message: HashMap<String, &HashMap<String, Value>> =
        rows.iter().map(|r| (text(r, "message").unwrap(), r)).collect();
    let expect = |message: &str, alert_type: Option<&str>, account: Option<&str>, sp: Option<&str>| {
        let row = by_message.get(message).unwrap_or_else(|| panic!("no row with message {message:?}: {rows:?}"));
        assert_eq!(text(row, "alert_type").as_deref(), alert_type, "alert_type of {message}");
        assert_eq!(text(row, "account_sid").as_deref(), account, "account_sid of {message}");
        assert_eq!(text(row, "service_provider_sid").as_deref(), sp, "service_provider_sid of {message}");
    };
    expect(
        "you have exceeded your account limit of 10 registered devices; please consider upgrading your plan",
        Some("account-device-limit"),
        Some("acc-1"),
        None,
    );
    expect("https://hooks.example.com/reg?x=1 returned 404", Some("webhook-failure"), Some("acc-2"), None);
    expect(
        "failed to connect to http://127.0.10.1:3000/reg",
        Some("webhook-connection-failure"),
        Some("acc 3,odd=sid"),
        None,
    );
    expect("Disabling Outbound Registration for carrier Carrier \"A\" (sid:car-1)", None, Some("acc-4"), Some("sp-1"));
    expect("Deactivating carrier Reg trunk (sid:car-2) due to registration errors", None, None, Some("sp-2"));
    expect("Options ping 192.0.2.10:5060;transport=udp unsuccessfully, received: 503", None, Some("acc-5"), None);
    expect("Options ping 192.0.2.11;transport=tcp unsuccessfully, error: connect refused", None, None, None);
    expect("Disabling Options ping for 192.0.2.12 in carrier Carrier B:car-3 due to 403", None, None, Some("sp-3"));

    // Timestamps are the alerts' own, in nanoseconds (a later nanosecond when two alerts
    // share one, so that InfluxDB keeps both).
    let mut times: Vec<u128> = influx
        .query_epoch_ns("SELECT message FROM alerts")
        .iter()
        .map(|r| r["time"].as_u64().unwrap() as u128)
        .collect();
    times.sort();
    let mut own: Vec<u128> =
        sent.iter().map(|a| a.time().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()).collect();
    own.sort();
    for (written, own) in times.iter().zip(&own) {
        assert!((*own..=own + 8).contains(written), "written {written}, raised {own}");
    }
}

#[test]
fn a_full_batch_is_written_at_once_the_timer_writes_the_rest_and_a_lost_database_is_recreated() {
    let influx = Influxd::start();
    let writer = AlertWriter::start(AlertSettings {
        batch_size: 50,
        flush_interval: Duration::from_millis(500),
        ..influx.settings()
    })
    .unwrap();
    let alerts = writer.sender();

    for i in 0..50 {
        alerts.send(Alert::account_device_limit(&format!("acc-{i}"), i));
    }
    assert_eq!(influx.wait_for_count(50, Duration::from_secs(10)), 50);

    // One alert is written by the flush timer.
    alerts.send(Alert::webhook_failure("acc-x", "http://h/reg", 500));
    assert_eq!(influx.wait_for_count(51, Duration::from_secs(10)), 51);

    // Someone drops the database (or InfluxDB comes back empty): it is created again.
    influx.post_query("DROP DATABASE \"alerts\"");
    alerts.send(Alert::webhook_failure("acc-y", "http://h/reg", 502));
    assert_eq!(influx.wait_for_count(1, Duration::from_secs(10)), 1);

    let stats = writer.shutdown();
    assert_eq!((stats.written, stats.dropped()), (52, 0), "{stats:?}");
}

#[test]
fn with_influxdb_down_alerts_are_dropped_and_counted_and_send_never_waits() {
    capture_logs();
    // A port where nothing listens: every connection is refused.
    let port = free_port();
    let writer = AlertWriter::start(AlertSettings {
        port,
        batch_size: 50,
        queue: 100,
        flush_interval: Duration::from_millis(200),
        timeout: Duration::from_millis(500),
        ..AlertSettings::new("127.0.0.1")
    })
    .unwrap();
    let alerts = writer.sender();

    let started = Instant::now();
    let mut refused = 0;
    for i in 0..10_000u64 {
        if !alerts.send(Alert::account_device_limit("acc-down", i)) {
            refused += 1;
        }
    }
    let burst = started.elapsed();
    eprintln!("10 000 sends with InfluxDB down took {burst:?}; {refused} refused at once");

    let stats = writer.shutdown();
    eprintln!("{stats:?}");
    assert_eq!(stats.written, 0);
    assert_eq!(stats.queued + stats.dropped_queue_full, 10_000, "{stats:?}");
    assert_eq!(stats.dropped_queue_full, refused, "{stats:?}");
    assert_eq!(stats.dropped(), 10_000, "every alert is accounted for as dropped: {stats:?}");
    assert!(stats.dropped_unavailable > 0, "{stats:?}");

    // After shutdown, sends are refused and counted too.
    assert!(!alerts.send(Alert::account_device_limit("acc-down", 0)));
    assert_eq!(alerts.stats().dropped_writer_stopped, 1);

    // Logged per state change and in summaries, not per alert.
    let lines = alert_log_lines();
    let about_drops: Vec<&String> = lines
        .iter()
        .filter(|l| {
            l.contains("acc-down") || l.contains("drop") || l.contains("cannot write") || l.contains("queue full")
        })
        .collect();
    eprintln!("log lines about drops: {about_drops:#?}");
    assert!(lines.iter().any(|l| l.contains("cannot write to InfluxDB")), "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("total_dropped=10000")), "{lines:#?}");
    assert!(!about_drops.is_empty() && about_drops.len() <= 12, "{about_drops:#?}");
    assert!(!lines.iter().any(|l| l.contains("acc-down")), "alert contents are not logged: {lines:#?}");
}

#[test]
fn a_hung_influxdb_holds_up_nobody_and_shutdown_gives_up_in_bounded_time() {
    // Accepts connections (the kernel does) but never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let writer = AlertWriter::start(AlertSettings {
        port: silent.local_addr().unwrap().port(),
        flush_interval: Duration::from_millis(100),
        timeout: Duration::from_millis(300),
        ..AlertSettings::new("127.0.0.1")
    })
    .unwrap();
    let alerts = writer.sender();
    for i in 0..20 {
        assert!(alerts.send(Alert::account_device_limit("acc-hung", i)));
    }
    thread::sleep(Duration::from_millis(400));
    let stats = writer.shutdown();
    assert_eq!((stats.written, stats.dropped_unavailable, stats.dropped()), (0, 20, 20), "{stats:?}");
}

// ------------------------------------------------------------------------------------------
// Metrics
// ------------------------------------------------------------------------------------------

fn statsd_socket() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    socket
}

fn metrics_to(port: u16, protocol: StatsProtocol, sample_rate: f64) -> Metrics {
    Metrics::new(&MetricsSettings {
        enabled: true,
        host: "127.0.0.1".into(),
        port,
        protocol,
        prefix: "jambonz.".into(),
        tags: vec!["env:test".into(), "region:eu".into()],
        sample_rate,
    })
    .unwrap()
}

fn datagram(socket: &UdpSocket) -> String {
    let mut buf = [0u8; 2048];
    let n = socket.recv(&mut buf).expect("a statsd datagram within 5 s");
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

#[test]
fn every_metric_of_the_spec_arrives_as_one_exact_datagram() {
    let socket = statsd_socket();
    let metrics = metrics_to(socket.local_addr().unwrap().port(), StatsProtocol::Udp, 1.0);

    metrics.registration_response_time(true, 200, Duration::from_micros(12_400));
    assert_eq!(datagram(&socket), "jambonz.sbc.registration.cached.response_time:12|h|#env:test,region:eu,status:200");
    metrics.registration_response_time(false, 401, Duration::from_millis(3));
    assert_eq!(datagram(&socket), "jambonz.sbc.registration.total.response_time:3|h|#env:test,region:eu,status:401");
    metrics.hook_response_time(200, Duration::from_millis(41));
    assert_eq!(datagram(&socket), "jambonz.app.hook.response_time:41|h|#env:test,region:eu,hook_type:auth,status:200");
    metrics.hook_response_time(403, Duration::from_millis(7));
    assert_eq!(datagram(&socket), "jambonz.app.hook.response_time:7|h|#env:test,region:eu,hook_type:auth,status:403");
    metrics.feature_servers(2);
    assert_eq!(datagram(&socket), "jambonz.featureservers:2|g|#env:test,region:eu");
    metrics.rtp_servers(1);
    assert_eq!(datagram(&socket), "jambonz.rtpservers:1|g|#env:test,region:eu");
    metrics.users_count(17);
    assert_eq!(datagram(&socket), "jambonz.sbc.users.count:17|g|#env:test,region:eu");
    assert_eq!(metrics.send_failures(), 0);
}

#[test]
fn metrics_can_be_sent_from_many_threads_through_one_handle() {
    let socket = statsd_socket();
    let metrics = metrics_to(socket.local_addr().unwrap().port(), StatsProtocol::Udp, 1.0);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let metrics = metrics.clone();
            thread::spawn(move || {
                for _ in 0..25 {
                    metrics.feature_servers(t);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut seen = HashMap::new();
    for _ in 0..100 {
        *seen.entry(datagram(&socket)).or_insert(0) += 1;
    }
    for t in 0..4 {
        assert_eq!(seen.get(&format!("jambonz.featureservers:{t}|g|#env:test,region:eu")), Some(&25), "{seen:?}");
    }
}

#[test]
fn a_sample_rate_below_one_sends_that_fraction_marked_with_the_rate() {
    let socket = statsd_socket();
    let metrics = metrics_to(socket.local_addr().unwrap().port(), StatsProtocol::Udp, 0.5);
    for _ in 0..400 {
        metrics.registration_response_time(false, 200, Duration::from_millis(5));
    }
    socket.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut received = 0;
    let mut buf = [0u8; 2048];
    while let Ok(n) = socket.recv(&mut buf) {
        assert_eq!(
            std::str::from_utf8(&buf[..n]).unwrap(),
            "jambonz.sbc.registration.total.response_time:5|h|@0.5|#env:test,region:eu,status:200"
        );
        received += 1;
    }
    // Binomial(400, 0.5): mean 200, standard deviation 10.
    assert!((100..=300).contains(&received), "{received} of 400 sent at rate 0.5");
}

#[test]
fn stats_protocol_tcp_sends_newline_terminated_lines() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics = metrics_to(listener.local_addr().unwrap().port(), StatsProtocol::Tcp, 1.0);
    metrics.users_count(5);
    metrics.hook_response_time(200, Duration::from_millis(9));
    let (stream, _) = listener.accept().unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut lines = BufReader::new(stream).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "jambonz.sbc.users.count:5|g|#env:test,region:eu");
    assert_eq!(
        lines.next().unwrap().unwrap(),
        "jambonz.app.hook.response_time:9|h|#env:test,region:eu,hook_type:auth,status:200"
    );
}

#[test]
fn with_metrics_disabled_nothing_is_sent() {
    let socket = statsd_socket();
    let settings =
        MetricsSettings { enabled: false, port: socket.local_addr().unwrap().port(), ..MetricsSettings::disabled() };
    let metrics = Metrics::new(&settings).unwrap();
    metrics.users_count(1);
    metrics.registration_response_time(false, 200, Duration::from_millis(1));
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut buf = [0u8; 64];
    assert!(socket.recv(&mut buf).is_err(), "no datagram expected");
}
