//! An elastic pool of threads for jobs that wait on the network, fair between accounts: the
//! registrar's auth workers.
//!
//! **Why the pool grows and shrinks.** An authentication is mostly waiting: a webhook call
//! takes 50–500 ms on a customer's server somewhere on the internet (seconds at worst), a
//! `clients` lookup a MySQL round trip. With blocking calls — the customer's card rules out an
//! async runtime — throughput is threads ÷ latency, so a fixed number of threads is right for
//! one latency only (8 threads: 80 registrations/s at 100 ms, 16/s at 500 ms). The pool
//! therefore starts a thread whenever a job can start and no thread is idle, up to
//! `max_in_flight`, and a thread idle for `idle_retire` ends, down to `min_threads`. A thread
//! that sleeps in `recv` costs no CPU, and with a small stack a few tens of KB of memory.
//!
//! **Why fair.** Every job carries a key — the account. A key may have `share` jobs running;
//! beyond that it may only borrow idle capacity while at least `share` slots stay free for
//! the others. So one account whose webhook is slow, or a flood of answers for one account,
//! never holds every thread, while an installation with a single account still gets most of
//! the pool. Keys under their share go first, in turn (round robin). A key may have
//! `key_queue` jobs waiting and all keys together `queue`; past either bound a job is refused
//! at once and the caller answers `503` — a device told to retry is better off than one left
//! waiting past its transaction timer.
//!
//! **Why the last thread to go idle is the first to wake.** Each idle thread waits on a
//! condition variable of its own, on a stack: a job wakes the thread that went idle last (its
//! stack and caches are warm), and threads at the bottom stay idle long enough to end. With
//! one shared condition variable the kernel wakes the thread that waited longest: at a steady
//! 400 registrations/s every one of a hundred threads got work now and then — none ever ended,
//! and each job ran on a cold thread (40–50 µs more CPU per registration, measured).
//!
//! All the pool's state is behind one mutex (the pool's queue, as in tiny_http's pool); jobs
//! run outside it.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::supervise::Supervisor;

use log::error;

/// The bounds of a [`FairPool`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolLimits {
    /// Threads kept even when idle (at least 1).
    pub min_threads: usize,
    /// Jobs running at once, and so threads, at most (at least `min_threads`).
    pub max_in_flight: usize,
    /// Jobs of one key running at once before it may only borrow (see the module doc).
    pub share: usize,
    /// Jobs waiting, all keys together.
    pub queue: usize,
    /// Jobs of one key waiting.
    pub key_queue: usize,
    /// A thread idle this long ends (while more than `min_threads` are left).
    pub idle_retire: Duration,
    /// Stack of each thread, in bytes.
    pub stack_size: usize,
}

impl PoolLimits {
    /// Limits from the operator's numbers: `share_percent` of `max_in_flight` (and of
    /// `queue`) per account, every bound at least 1.
    pub fn from_share(min_threads: usize, max_in_flight: usize, queue: usize, share_percent: u8) -> PoolLimits {
        let min_threads = min_threads.max(1);
        let max_in_flight = max_in_flight.max(min_threads);
        let percent_of = |n: usize| (n.saturating_mul(usize::from(share_percent.clamp(1, 100))) / 100).max(1);
        PoolLimits {
            min_threads,
            max_in_flight,
            share: percent_of(max_in_flight),
            queue: queue.max(1),
            key_queue: percent_of(queue.max(1)),
            idle_retire: Duration::from_secs(10),
            stack_size: 512 * 1024,
        }
    }
}

/// Why [`FairPool::submit`] gave a job back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its key already has `key_queue` jobs waiting.
    KeyQueueFull,
    /// `queue` jobs are waiting in all.
    QueueFull,
    /// The pool is shutting down.
    Closed,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::KeyQueueFull => "the account's queue is full",
            Refusal::QueueFull => "the queue is full",
            Refusal::Closed => "shutting down",
        })
    }
}

/// How busy the pool is, for `sbcctl status` and the statsd gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolLoad {
    pub in_flight: usize,
    pub waiting: usize,
    pub threads: usize,
    pub idle_threads: usize,
    pub max_in_flight: usize,
    pub share: usize,
    /// The most threads there were at once since the start.
    pub peak_threads: usize,
    /// Jobs refused since the start because a queue was full.
    pub refused: u64,
    /// The keys with jobs running or waiting, busiest first, at most [`BUSIEST_KEYS`].
    pub busiest: Vec<KeyLoad>,
}

/// One key's part of a [`PoolLoad`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLoad {
    pub key: String,
    pub in_flight: usize,
    pub waiting: usize,
}

/// How many keys a [`PoolLoad`] names: enough to see who holds the pool, few enough for a
/// status line and a bounded number of statsd tag values.
pub const BUSIEST_KEYS: usize = 10;

/// A cheap, cloneable way to read a pool's [`PoolLoad`] from another thread without knowing
/// its job type.
#[derive(Clone)]
pub struct LoadProbe(Arc<dyn Fn() -> PoolLoad + Send + Sync>);

impl LoadProbe {
    pub fn load(&self) -> PoolLoad {
        (self.0)()
    }
}

pub struct FairPool<T: Send + 'static> {
    shared: Arc<Shared<T>>,
}

type Job<T> = Box<dyn Fn(T) + Send + Sync>;

struct Shared<T> {
    /// Thread names are `<name>-<n>`.
    name: String,
    limits: PoolLimits,
    /// Starts the threads; a panic is reported to the daemon.
    supervisor: Supervisor,
    run: Job<T>,
    state: Mutex<State<T>>,
    /// [`FairPool::close`] waits here for the last thread.
    gone: Condvar,
}

struct State<T> {
    keys: HashMap<Arc<str>, KeyState<T>>,
    /// Keys with jobs waiting, each once, in the order they get their turn.
    turn: VecDeque<Arc<str>>,
    waiting: usize,
    in_flight: usize,
    threads: usize,
    /// Idle threads, the one that went idle last on top.
    idle: Vec<Idler>,
    /// Threads taken off `idle` and told to wake that have not woken yet.
    wakeups: usize,
    /// Threads started for waiting jobs that have not reached the queue yet.
    spawning: usize,
    closed: bool,
    /// Threads started so far (each gets the next number in its name).
    started: u64,
    peak_threads: usize,
    refused: u64,
}

/// An idle thread: its number and what wakes it.
#[derive(Clone)]
struct Idler {
    number: u64,
    wake: Arc<Condvar>,
}

struct KeyState<T> {
    waiting: VecDeque<T>,
    in_flight: usize,
}

impl<T> State<T> {
    /// Idle threads (those told to wake are no longer on the stack).
    fn free_threads(&self) -> usize {
        self.idle.len()
    }

    /// Wakes every idle thread (the pool closes, or a thread ended and others must look at
    /// the queue).
    fn wake_all(&mut self) {
        for idler in self.idle.drain(..) {
            self.wakeups += 1;
            idler.wake.notify_one();
        }
    }

    /// Threads on their way to the queue (woken or starting), each to take a waiting job.
    fn coming(&self) -> usize {
        self.wakeups + self.spawning
    }

    /// The next job to run: the first key in turn that is under its share, else the first
    /// key in turn when borrowing is allowed. The key goes to the back of the turn.
    fn take_next(&mut self, limits: &PoolLimits) -> Option<(Arc<str>, T)> {
        let keys = &self.keys;
        let in_flight_of = |k: &Arc<str>| keys.get(k).map_or(0, |s| s.in_flight);
        let pos = self.turn.iter().position(|k| in_flight_of(k) < limits.share).or_else(|| {
            let borrow = !self.turn.is_empty() && self.in_flight + limits.share < limits.max_in_flight;
            borrow.then_some(0)
        })?;
        let key = self.turn.remove(pos)?;
        let entry = self.keys.get_mut(&key)?;
        let job = entry.waiting.pop_front()?;
        entry.in_flight += 1;
        if !entry.waiting.is_empty() {
            self.turn.push_back(Arc::clone(&key));
        }
        self.waiting -= 1;
        self.in_flight += 1;
        Some((key, job))
    }

    fn finished(&mut self, key: &Arc<str>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Some(entry) = self.keys.get_mut(key) {
            entry.in_flight = entry.in_flight.saturating_sub(1);
            if entry.in_flight == 0 && entry.waiting.is_empty() {
                self.keys.remove(key);
            }
        }
    }

    fn load(&self, limits: &PoolLimits) -> PoolLoad {
        let mut busiest: Vec<KeyLoad> = self
            .keys
            .iter()
            .map(|(k, s)| KeyLoad { key: k.to_string(), in_flight: s.in_flight, waiting: s.waiting.len() })
            .collect();
        busiest.sort_by(|a, b| (b.in_flight + b.waiting).cmp(&(a.in_flight + a.waiting)).then(a.key.cmp(&b.key)));
        busiest.truncate(BUSIEST_KEYS);
        PoolLoad {
            in_flight: self.in_flight,
            waiting: self.waiting,
            threads: self.threads,
            idle_threads: self.idle.len(),
            max_in_flight: limits.max_in_flight,
            share: limits.share,
            peak_threads: self.peak_threads,
            refused: self.refused,
            busiest,
        }
    }
}

impl<T: Send + 'static> FairPool<T> {
    /// Starts `limits.min_threads` threads named `<name>-0`, `<name>-1`, … that call `run` for
    /// each job. `run` must not panic (the registrar's catches its own panics); a thread that
    /// panics anyway is reported to the daemon's supervision, which stops the daemon.
    pub fn start(
        name: &str,
        limits: PoolLimits,
        supervisor: Supervisor,
        run: impl Fn(T) + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            name: name.to_string(),
            limits,
            supervisor,
            run: Box::new(run),
            state: Mutex::new(State {
                keys: HashMap::new(),
                turn: VecDeque::new(),
                waiting: 0,
                in_flight: 0,
                threads: 0,
                idle: Vec::new(),
                wakeups: 0,
                spawning: 0,
                closed: false,
                started: 0,
                peak_threads: 0,
                refused: 0,
            }),
            gone: Condvar::new(),
        });
        let pool = FairPool { shared };
        for _ in 0..limits.min_threads {
            let number = pool.shared.reserve_thread();
            if let Err(e) = spawn_thread(&pool.shared, number, false) {
                pool.shared.lock().threads -= 1;
                pool.finish();
                return Err(e);
            }
        }
        Ok(pool)
    }

    /// Queues `job` under `key`, waking an idle thread or starting one; gives it back when
    /// a bound is reached or the pool is closed.
    pub fn submit(&self, key: &str, job: T) -> Result<(), (T, Refusal)> {
        let limits = &self.shared.limits;
        let mut st = self.shared.lock();
        if st.closed {
            return Err((job, Refusal::Closed));
        }
        if st.waiting >= limits.queue {
            st.refused += 1;
            return Err((job, Refusal::QueueFull));
        }
        let (key_waiting, key_in_flight) = st.keys.get(key).map_or((0, 0), |s| (s.waiting.len(), s.in_flight));
        if key_waiting >= limits.key_queue {
            st.refused += 1;
            return Err((job, Refusal::KeyQueueFull));
        }
        // Can it start before the jobs ahead of it are done? (One that cannot is taken by the
        // thread that finishes a job ahead of it.)
        let committed = st.threads - st.free_threads();
        let startable = key_in_flight + key_waiting < limits.share || committed + limits.share < limits.max_in_flight;
        let key: Arc<str> = match st.keys.get_key_value(key) {
            Some((k, _)) => Arc::clone(k),
            None => Arc::from(key),
        };
        let entry =
            st.keys.entry(Arc::clone(&key)).or_insert_with(|| KeyState { waiting: VecDeque::new(), in_flight: 0 });
        entry.waiting.push_back(job);
        if entry.waiting.len() == 1 {
            st.turn.push_back(key);
        }
        st.waiting += 1;
        // A job that must wait for its key's turn needs no thread now: the thread that
        // finishes one of the key's jobs (or any job, for a borrower) takes it.
        if !startable || st.coming() >= st.waiting {
            return Ok(());
        }
        if let Some(number) = self.shared.summon(&mut st) {
            drop(st);
            self.shared.spawn_reserved(number);
        }
        Ok(())
    }

    /// How busy the pool is now.
    pub fn load(&self) -> PoolLoad {
        self.shared.lock().load(&self.shared.limits)
    }

    /// A probe other threads can read [`load`](Self::load) through.
    pub fn probe(&self) -> LoadProbe {
        let shared = Arc::clone(&self.shared);
        LoadProbe(Arc::new(move || shared.lock().load(&shared.limits)))
    }

    /// Stops taking jobs, hands every job still waiting to `refuse`, and waits for the
    /// threads to finish the jobs they hold.
    pub fn close(&self, mut refuse: impl FnMut(T)) {
        let waiting: Vec<T> = {
            let mut st = self.shared.lock();
            st.closed = true;
            st.waiting = 0;
            st.turn.clear();
            let keys = std::mem::take(&mut st.keys);
            let mut waiting = Vec::new();
            for (key, mut state) in keys {
                waiting.extend(state.waiting.drain(..));
                if state.in_flight > 0 {
                    st.keys.insert(key, state);
                }
            }
            st.wake_all();
            waiting
        };
        waiting.into_iter().for_each(&mut refuse);
        self.wait_for_threads();
    }

    /// Stops taking jobs, lets the threads run every job already waiting, and waits for them.
    pub fn finish(&self) {
        let mut st = self.shared.lock();
        st.closed = true;
        st.wake_all();
        drop(st);
        self.wait_for_threads();
    }

    fn wait_for_threads(&self) {
        let mut st = self.shared.lock();
        while st.threads > 0 {
            st = self.shared.gone.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl<T: Send + 'static> Shared<T> {
    /// The pool's state stays consistent across a panicking `run` (it runs outside the lock),
    /// so a poisoned lock is taken as it is.
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gets a thread on its way to the queue: wakes an idle one, or reserves a new one (its
    /// number is returned: the caller starts it with [`spawn_reserved`](Self::spawn_reserved)
    /// once the lock is released).
    fn summon(&self, st: &mut State<T>) -> Option<u64> {
        if let Some(idler) = st.idle.pop() {
            st.wakeups += 1;
            idler.wake.notify_one();
            None
        } else if st.threads < self.limits.max_in_flight {
            st.spawning += 1;
            Some(Shared::reserve_thread_locked(st))
        } else {
            None
        }
    }

    fn spawn_reserved(self: &Arc<Self>, number: u64) {
        if let Err(e) = spawn_thread(self, number, true) {
            // The jobs stay queued for the threads that finish their own.
            error!("{}: cannot start a thread: {e}", self.name);
            let mut st = self.lock();
            st.threads -= 1;
            st.spawning = st.spawning.saturating_sub(1);
        }
    }

    fn reserve_thread(&self) -> u64 {
        Shared::reserve_thread_locked(&mut self.lock())
    }

    /// Counts a thread about to start (so that two submits do not both start one for the
    /// same free slot) and returns its number.
    fn reserve_thread_locked(st: &mut State<T>) -> u64 {
        st.threads += 1;
        st.peak_threads = st.peak_threads.max(st.threads);
        st.started += 1;
        st.started - 1
    }

    /// A thread's life: take a job, run it, again; wait when there is none; end when idle too
    /// long (above the minimum) or when the pool is closed and nothing waits.
    fn work(self: Arc<Self>, number: u64, summoned: bool) {
        let limits = self.limits;
        let me = Idler { number, wake: Arc::new(Condvar::new()) };
        let mut st = self.lock();
        if summoned {
            st.spawning = st.spawning.saturating_sub(1);
        }
        loop {
            if let Some((key, job)) = st.take_next(&limits) {
                // More that could start: another thread takes the next while this one runs.
                let more = st.take_would_succeed(&limits) && st.coming() < st.waiting;
                let helper = if more { self.summon(&mut st) } else { None };
                drop(st);
                if let Some(number) = helper {
                    self.spawn_reserved(number);
                }
                let guard = Finished { shared: &self, key: Some(key) };
                (self.run)(job);
                st = guard.done();
                continue;
            }
            if st.closed && st.waiting == 0 {
                break;
            }
            let timed_out;
            (st, timed_out) = self.idle_wait(st, &me);
            let needed = st.waiting > 0 && (st.closed || st.take_would_succeed(&limits));
            if timed_out && !needed && st.threads > limits.min_threads {
                break;
            }
        }
        st.threads -= 1;
        if st.threads == 0 {
            self.gone.notify_all();
        }
    }
}

impl<T: Send + 'static> Shared<T> {
    /// Waits on top of the idle stack until a job wakes this thread (it is then no longer on
    /// the stack) or `idle_retire` passes (it takes itself off); true when it timed out.
    fn idle_wait<'a>(&'a self, mut st: MutexGuard<'a, State<T>>, me: &Idler) -> (MutexGuard<'a, State<T>>, bool) {
        st.idle.push(me.clone());
        let deadline = Instant::now() + self.limits.idle_retire;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (woken, _) = me.wake.wait_timeout(st, left).unwrap_or_else(|p| p.into_inner());
            st = woken;
            match st.idle.iter().position(|i| i.number == me.number) {
                None => {
                    st.wakeups = st.wakeups.saturating_sub(1);
                    return (st, false);
                }
                Some(at) if Instant::now() >= deadline => {
                    st.idle.remove(at);
                    return (st, true);
                }
                // Woken for nothing: still idle, wait on.
                Some(_) => {}
            }
        }
    }
}

impl<T> State<T> {
    fn take_would_succeed(&self, limits: &PoolLimits) -> bool {
        self.turn.iter().any(|k| self.keys.get(k).is_some_and(|s| s.in_flight < limits.share))
            || (!self.turn.is_empty() && self.in_flight + limits.share < limits.max_in_flight)
    }
}

/// Gives a job's slot back when `run` returns — and when it unwinds, so that a panicking
/// job does not leave its key counted as busy forever.
struct Finished<'a, T: Send + 'static> {
    shared: &'a Arc<Shared<T>>,
    key: Option<Arc<str>>,
}

impl<'a, T: Send + 'static> Finished<'a, T> {
    fn done(mut self) -> MutexGuard<'a, State<T>> {
        let mut st = self.shared.lock();
        if let Some(key) = self.key.take() {
            st.finished(&key);
        }
        st
    }
}

impl<T: Send + 'static> Drop for Finished<'_, T> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let mut st = self.shared.lock();
            st.finished(&key);
            // This thread is about to end: it no longer counts, and the jobs it would have
            // taken need someone.
            st.threads -= 1;
            if st.threads == 0 {
                self.shared.gone.notify_all();
            }
            st.wake_all();
        }
    }
}

/// Starts thread `number`; `summoned`: for waiting jobs (counted in `spawning`), not one of
/// the threads the pool starts with.
fn spawn_thread<T: Send + 'static>(shared: &Arc<Shared<T>>, number: u64, summoned: bool) -> std::io::Result<()> {
    let name = format!("{}-{number}", shared.name);
    let for_thread = Arc::clone(shared);
    shared
        .supervisor
        .spawn_worker(name, shared.limits.stack_size, move || for_thread.work(number, summoned))
        .map(|_| ())
}

#[cfg(test)]
mod tests;
