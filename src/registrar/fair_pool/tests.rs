//! The pool with jobs that block until the test lets them go: what runs, what waits, how
//! many threads there are. Waits poll with a generous deadline; nothing asserts a duration.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};

use super::*;

/// A job that reports it started, then waits for its gate (or for the gate to be dropped).
struct Blocking {
    id: usize,
    gate: Receiver<()>,
}

struct Rig {
    pool: FairPool<Blocking>,
    started: Receiver<usize>,
    done: Arc<AtomicUsize>,
}

fn rig(limits: PoolLimits) -> Rig {
    let (started_tx, started) = unbounded();
    let done = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&done);
    let pool = FairPool::start("test-worker", limits, Supervisor::unwatched(), move |job: Blocking| {
        let _ = started_tx.send(job.id);
        let _ = job.gate.recv();
        counted.fetch_add(1, Ordering::SeqCst);
    })
    .expect("threads start");
    Rig { pool, started, done }
}

fn limits(min: usize, max: usize, share: usize, queue: usize, key_queue: usize) -> PoolLimits {
    PoolLimits {
        min_threads: min,
        max_in_flight: max,
        share,
        queue,
        key_queue,
        idle_retire: Duration::from_millis(100),
        stack_size: 256 * 1024,
    }
}

/// Submits a job and returns the sender that lets it finish.
fn submit(rig: &Rig, key: &str, id: usize) -> Sender<()> {
    let (tx, gate) = unbounded();
    rig.pool.submit(key, Blocking { id, gate }).map_err(|(_, why)| why).expect("accepted");
    tx
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The ids that have started, after waiting for `n` of them.
fn started(rig: &Rig, n: usize) -> Vec<usize> {
    (0..n).map(|_| rig.started.recv_timeout(Duration::from_secs(10)).expect("a job started")).collect()
}

fn nothing_more_started(rig: &Rig) {
    // Long enough for an idle or new thread to have picked a job up, were one allowed to.
    assert_eq!(rig.started.recv_timeout(Duration::from_millis(200)).ok(), None, "{:?}", rig.pool.load());
}

#[test]
fn the_pool_grows_with_the_jobs_waiting_and_shrinks_to_its_minimum_when_idle() {
    let rig = rig(limits(2, 64, 64, 100, 100));
    assert_eq!(rig.pool.load().threads, 2);
    // The two it starts with are waiting for work: the first jobs wake them, the rest get
    // a thread each.
    wait_until("the first threads are idle", || rig.pool.load().idle_threads == 2);
    let gates: Vec<_> = (0..40).map(|i| submit(&rig, "acct", i)).collect();
    let mut ids = started(&rig, 40);
    ids.sort();
    assert_eq!(ids, (0..40).collect::<Vec<_>>(), "all forty run at once");
    let load = rig.pool.load();
    assert_eq!((load.in_flight, load.waiting, load.threads), (40, 0, 40), "{load:?}");
    drop(gates);
    wait_until("every job is done", || rig.done.load(Ordering::SeqCst) == 40);
    wait_until("idle threads retired", || rig.pool.load().threads == 2);
    assert_eq!(rig.pool.load().peak_threads, 40);
    // and it grows again
    let gates: Vec<_> = (100..110).map(|i| submit(&rig, "acct", i)).collect();
    assert_eq!(started(&rig, 10).len(), 10);
    assert_eq!(rig.pool.load().threads, 10);
    drop(gates);
    rig.pool.finish();
    assert_eq!(rig.pool.load().threads, 0);
}

#[test]
fn no_more_than_max_in_flight_run_and_the_rest_wait_their_turn() {
    let rig = rig(limits(1, 4, 4, 100, 100));
    let gates: Vec<_> = (0..10).map(|i| submit(&rig, "acct", i)).collect();
    assert_eq!(started(&rig, 4).len(), 4);
    nothing_more_started(&rig);
    let load = rig.pool.load();
    assert_eq!((load.in_flight, load.waiting, load.threads), (4, 6, 4), "{load:?}");
    drop(gates);
    wait_until("every job is done", || rig.done.load(Ordering::SeqCst) == 10);
    assert!(rig.pool.load().peak_threads <= 4);
    rig.pool.finish();
}

#[test]
fn one_account_borrows_idle_capacity_but_never_the_last_share_and_others_start_at_once() {
    // 8 slots, share 2: one account alone may run 6 (two slots stay free for the others).
    let rig = rig(limits(1, 8, 2, 100, 100));
    let a_gates: Vec<_> = (0..10).map(|i| submit(&rig, "a", i)).collect();
    assert_eq!(started(&rig, 6).len(), 6);
    nothing_more_started(&rig);
    assert_eq!(rig.pool.load().busiest[0], KeyLoad { key: "a".into(), in_flight: 6, waiting: 4 });

    // Another account starts at once, up to its share, although "a" has four waiting.
    let b_gates: Vec<_> = (100..103).map(|i| submit(&rig, "b", i)).collect();
    let mut b_started = started(&rig, 2);
    b_started.sort();
    assert_eq!(b_started, vec![100, 101]);
    nothing_more_started(&rig);
    let load = rig.pool.load();
    assert_eq!((load.in_flight, load.waiting), (8, 5), "{load:?}");

    // When one of b's finishes, its third (under its share again) goes before a's waiting.
    drop(b_gates.into_iter().next());
    assert_eq!(started(&rig, 1), vec![102]);
    drop(a_gates);
    rig.pool.finish();
    assert_eq!(rig.done.load(Ordering::SeqCst), 13);
}

#[test]
fn accounts_under_their_share_take_turns() {
    // One slot, share 1: every job waits for it; the accounts alternate.
    let rig = rig(limits(1, 1, 1, 100, 100));
    let first = submit(&rig, "a", 0);
    assert_eq!(started(&rig, 1), vec![0]);
    let mut gates = Vec::new();
    for i in 1..4 {
        gates.push(submit(&rig, "a", i));
    }
    for i in 11..14 {
        gates.push(submit(&rig, "b", i));
    }
    drop(first);
    drop(gates);
    let order = started(&rig, 6);
    assert_eq!(order, vec![1, 11, 2, 12, 3, 13]);
    rig.pool.finish();
}

#[test]
fn a_full_account_queue_refuses_that_account_only_and_the_whole_queue_refuses_everyone() {
    let rig = rig(limits(1, 2, 1, 5, 3));
    let mut gates = vec![submit(&rig, "a", 0)];
    started(&rig, 1);
    for i in 1..4 {
        gates.push(submit(&rig, "a", i));
    }
    let (_tx, gate) = unbounded();
    let refused = rig.pool.submit("a", Blocking { id: 4, gate }).map_err(|(job, why)| (job.id, why));
    assert_eq!(refused.err(), Some((4, Refusal::KeyQueueFull)));
    // "b" is still taken, and runs in the free slot.
    gates.push(submit(&rig, "b", 10));
    assert_eq!(started(&rig, 1), vec![10]);
    gates.push(submit(&rig, "b", 11));
    gates.push(submit(&rig, "c", 20));
    // Five waiting now (a: 3, b: 1, c: 1): the queue is full for everyone.
    let (_tx, gate) = unbounded();
    let refused = rig.pool.submit("d", Blocking { id: 30, gate }).map_err(|(job, why)| (job.id, why));
    assert_eq!(refused.err(), Some((30, Refusal::QueueFull)));
    assert_eq!(rig.pool.load().refused, 2);
    drop(gates);
    rig.pool.finish();
    assert_eq!(rig.done.load(Ordering::SeqCst), 7);
}

#[test]
fn close_refuses_what_waits_and_waits_for_what_runs() {
    let rig = rig(limits(1, 2, 2, 100, 100));
    let gates: Vec<_> = (0..5).map(|i| submit(&rig, "a", i)).collect();
    started(&rig, 2);
    let refused = Arc::new(Mutex::new(Vec::new()));
    let closing = {
        let refused = Arc::clone(&refused);
        let pool = FairPool { shared: Arc::clone(&rig.pool.shared) };
        std::thread::spawn(move || pool.close(|job| refused.lock().unwrap().push(job.id)))
    };
    wait_until("the waiting jobs are refused", || refused.lock().unwrap().len() == 3);
    assert!(!closing.is_finished(), "close waits for the two running jobs");
    let (_tx, gate) = unbounded();
    assert_eq!(rig.pool.submit("a", Blocking { id: 9, gate }).err().map(|(_, why)| why), Some(Refusal::Closed));
    drop(gates);
    closing.join().expect("close returns");
    assert_eq!(rig.done.load(Ordering::SeqCst), 2, "the running ones finished");
    let mut ids = refused.lock().unwrap().clone();
    ids.sort();
    assert_eq!(ids, vec![2, 3, 4]);
    assert_eq!(rig.pool.load().threads, 0);
}

#[test]
fn a_job_that_panics_gives_its_slot_back_and_the_pool_carries_on() {
    let (supervisor, ended) = Supervisor::new();
    let pool = FairPool::start("test-panic", limits(1, 2, 1, 10, 10), supervisor, |n: usize| {
        if n == 0 {
            panic!("a bug in a job");
        }
    })
    .expect("threads start");
    pool.submit("a", 0).map_err(|(_, why)| why).expect("accepted");
    wait_until("the panicking thread is gone", || {
        let load = pool.load();
        load.in_flight == 0 && load.waiting == 0 && load.threads < load.peak_threads
    });
    // The daemon hears of the panic (and of nothing else: idle threads that end are not news).
    let report = ended.recv_timeout(std::time::Duration::from_secs(5)).expect("the panic is reported");
    assert!(report.panicked && report.role.starts_with("test-panic-"), "{report:?}");
    // The account is not left counted as busy: its next jobs run on new threads.
    for n in 1..5 {
        pool.submit("a", n).map_err(|(_, why)| why).expect("accepted");
    }
    wait_until("the other jobs ran", || {
        let load = pool.load();
        load.in_flight == 0 && load.waiting == 0
    });
    pool.finish();
}

#[test]
fn the_thread_that_went_idle_last_takes_the_next_job_and_the_others_end() {
    let (ran_on_tx, ran_on) = unbounded::<String>();
    let mut l = limits(1, 16, 16, 100, 100);
    l.idle_retire = Duration::from_millis(300);
    let pool = FairPool::start("test-lifo", l, Supervisor::unwatched(), move |gate: Receiver<()>| {
        let _ = gate.recv();
        let _ = ran_on_tx.send(std::thread::current().name().unwrap_or("").to_string());
    })
    .expect("threads start");
    // Eight at once: eight threads.
    let gates: Vec<Sender<()>> = (0..8)
        .map(|_| {
            let (tx, rx) = unbounded();
            pool.submit("a", rx).map_err(|(_, why)| why).expect("accepted");
            tx
        })
        .collect();
    wait_until("eight run", || pool.load().in_flight == 8);
    drop(gates);
    for _ in 0..8 {
        ran_on.recv_timeout(Duration::from_secs(10)).expect("finished");
    }
    // One at a time, each after every thread is idle again: always the same, warm thread.
    let mut names = Vec::new();
    for _ in 0..20 {
        wait_until("every thread idle", || {
            let load = pool.load();
            load.idle_threads == load.threads
        });
        let (tx, rx) = unbounded();
        drop(tx);
        pool.submit("a", rx).map_err(|(_, why)| why).expect("accepted");
        names.push(ran_on.recv_timeout(Duration::from_secs(10)).expect("ran"));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(names.iter().all(|n| *n == names[0]), "{names:?}");
    // The seven that got no work ended, although a job came every 20 ms.
    wait_until("the unused threads ended", || pool.load().threads <= 2);
    pool.finish();
}
