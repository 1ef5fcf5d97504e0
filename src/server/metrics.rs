//! Prometheus text metrics: requests and latency per route, tokens
//! generated, answers by outcome (answered, or why lore abstained) and
//! their support, generation queue depth, index sizes, and for `--watch`
//! the lag between a file changing and the index having it.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;

use super::State;
use crate::watch::WatchReading;

/// Latency bucket bounds, seconds.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default)]
struct Route {
    /// Requests by status code.
    statuses: BTreeMap<u16, u64>,
    /// Cumulative counts per bucket, then +Inf.
    buckets: [u64; BUCKETS.len() + 1],
    sum: f64,
}

/// Upper bounds of the support histogram's buckets.
const SUPPORT_BUCKETS: [f64; 10] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];

/// Answers by outcome, and the support of those that had one.
#[derive(Default)]
struct Answers {
    /// `answered`, or the reason of an abstention.
    outcomes: BTreeMap<&'static str, u64>,
    /// Counts per support bucket (not cumulative).
    support: [u64; SUPPORT_BUCKETS.len()],
    support_sum: f64,
}

/// Counters shared by all workers.
#[derive(Default)]
pub struct Metrics {
    routes: Mutex<BTreeMap<String, Route>>,
    answers: Mutex<Answers>,
    /// Tokens generated since start.
    pub tokens: AtomicU64,
}

impl Metrics {
    /// Counts one finished answer.
    pub fn record_answer(&self, response: &crate::engine::AskResponse) {
        self.tokens
            .fetch_add(response.timings.gen_tokens as u64, Ordering::Relaxed);
        let Ok(mut answers) = self.answers.lock() else {
            return;
        };
        let outcome = response.abstained_because.map_or("answered", |a| a.name());
        *answers.outcomes.entry(outcome).or_default() += 1;
        if let Some(support) = response.support {
            let bucket = SUPPORT_BUCKETS
                .iter()
                .position(|b| support <= *b)
                .unwrap_or(SUPPORT_BUCKETS.len() - 1);
            answers.support[bucket] += 1;
            answers.support_sum += support;
        }
    }

    fn render_answers(&self, out: &mut String) {
        let Ok(answers) = self.answers.lock() else {
            return;
        };
        out.push_str("# TYPE lore_answers_total counter\n");
        for (outcome, n) in &answers.outcomes {
            let _ = writeln!(out, "lore_answers_total{{outcome=\"{outcome}\"}} {n}");
        }
        out.push_str("# TYPE lore_answer_support histogram\n");
        let mut cumulative = 0;
        for (bound, n) in SUPPORT_BUCKETS.iter().zip(answers.support) {
            cumulative += n;
            let _ = writeln!(
                out,
                "lore_answer_support_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "lore_answer_support_bucket{{le=\"+Inf\"}} {cumulative}\n\
             lore_answer_support_sum {}\n\
             lore_answer_support_count {cumulative}",
            answers.support_sum
        );
    }

    fn record(&self, route: &str, status: u16, seconds: f64) {
        let Ok(mut routes) = self.routes.lock() else {
            return;
        };
        let entry = routes.entry(route.to_string()).or_default();
        *entry.statuses.entry(status).or_default() += 1;
        let bucket = BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(BUCKETS.len());
        entry.buckets[bucket] += 1;
        entry.sum += seconds;
    }

    /// The text exposition, with the gauges passed in.
    pub fn render(
        &self,
        queue_depth: usize,
        kv_bytes: usize,
        index: &[(&str, u64)],
        watching: &[WatchReading],
    ) -> String {
        let mut out = String::new();
        out.push_str("# TYPE lore_http_requests_total counter\n");
        let routes = self.routes.lock().map(|r| {
            r.iter()
                .map(|(k, v)| (k.clone(), v.statuses.clone(), v.buckets, v.sum))
                .collect::<Vec<_>>()
        });
        let routes = routes.unwrap_or_default();
        for (route, statuses, _, _) in &routes {
            for (status, n) in statuses {
                let _ = writeln!(
                    out,
                    "lore_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        out.push_str("# TYPE lore_http_request_seconds histogram\n");
        for (route, _, buckets, sum) in &routes {
            let mut cumulative = 0;
            for (bound, n) in BUCKETS.iter().zip(buckets) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "lore_http_request_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            cumulative += buckets[BUCKETS.len()];
            let _ = writeln!(
                out,
                "lore_http_request_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {cumulative}\n\
                 lore_http_request_seconds_sum{{route=\"{route}\"}} {sum}\n\
                 lore_http_request_seconds_count{{route=\"{route}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "# TYPE lore_generated_tokens_total counter\nlore_generated_tokens_total {}",
            self.tokens.load(Ordering::Relaxed)
        );
        self.render_answers(&mut out);
        let _ = writeln!(
            out,
            "# TYPE lore_generation_queue_depth gauge\nlore_generation_queue_depth {queue_depth}"
        );
        let _ = writeln!(
            out,
            "# TYPE lore_kv_cache_bytes gauge\nlore_kv_cache_bytes {kv_bytes}"
        );
        out.push_str("# TYPE lore_index_size gauge\n");
        for (what, n) in index {
            let _ = writeln!(out, "lore_index_size{{kind=\"{what}\"}} {n}");
        }
        if !watching.is_empty() {
            render_watch(&mut out, watching);
        }
        out
    }
}

/// The watchers' gauges and counters, summed (lags: the largest).
fn render_watch(out: &mut String, watching: &[WatchReading]) {
    let most = |f: fn(&WatchReading) -> f64| watching.iter().map(f).fold(0.0, f64::max);
    let sum = |f: fn(&WatchReading) -> u64| watching.iter().map(f).sum::<u64>();
    let _ = writeln!(
        out,
        "# HELP lore_watch_lag_seconds How long the oldest file change not yet in the index has waited.\n\
         # TYPE lore_watch_lag_seconds gauge\nlore_watch_lag_seconds {}\n\
         # TYPE lore_watch_last_lag_seconds gauge\nlore_watch_last_lag_seconds {}\n\
         # TYPE lore_watch_max_lag_seconds gauge\nlore_watch_max_lag_seconds {}\n\
         # TYPE lore_watch_events_total counter\nlore_watch_events_total {}\n\
         # TYPE lore_watch_batches_total counter\nlore_watch_batches_total {}\n\
         # TYPE lore_watch_rescans_total counter\nlore_watch_rescans_total {}\n\
         # TYPE lore_watch_errors_total counter\nlore_watch_errors_total {}",
        most(|w| w.lag_s),
        most(|w| w.last_lag_s),
        most(|w| w.max_lag_s),
        sum(|w| w.events),
        sum(|w| w.batches),
        sum(|w| w.rescans),
        sum(|w| w.errors),
    );
}

/// Middleware: counts every request under its route pattern.
pub async fn record(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let start = Instant::now();
    let state = req
        .app_data::<web::Data<State>>()
        .expect("state is registered")
        .clone();
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let result = next.call(req).await;
    let status = match &result {
        Ok(res) => res.status().as_u16(),
        Err(err) => err.as_response_error().status_code().as_u16(),
    };
    state
        .metrics
        .record(&route, status, start.elapsed().as_secs_f64());
    result
}
