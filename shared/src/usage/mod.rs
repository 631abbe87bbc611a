//! The usage ledger and budgets.
//!
//! Every model call (chat, the one-shot routes) and every call to an embedding API records
//! its tokens and an estimated cost ([`Ledger::record`]) in atomic counters: per tenant and
//! per user, by day and model (kept `COACH_USAGE_RETENTION_DAYS`, 400) and as month totals.
//! Costs come from a price table per model (USD per million input and output tokens):
//! defaults for the providers' default models ([`DEFAULT_PRICES`]), overridden or extended by
//! `COACH_PRICES`; a model without a price costs 0 and is logged once. Costs are kept in
//! billionths of a dollar, so the counters add exactly.
//!
//! Providers answer under another name than the one asked for: OpenAI serves `gpt-4o-mini`
//! as `gpt-4o-mini-2024-07-18`, Anthropic `claude-3-5-haiku-latest` as
//! `claude-3-5-haiku-20241022`, Gemini names versions like `gemini-1.5-flash-002`. A price is
//! looked up by the served name, then the requested name, then the served name without its
//! date or version suffixes ([`base_name`]) against the table's names without theirs
//! ([`Prices::lookup`]). The ledger keeps the served name.
//!
//! Recording is best effort: a failure is logged and counted, never shown to the caller
//! who already has their answer.
//!
//! Budgets (`COACH_BUDGET_USER_MONTHLY`, `COACH_BUDGET_TENANT_MONTHLY`, in US dollars or, with
//! `COACH_BUDGET_UNIT=tokens`, in tokens; 0 turns one off) are checked before the model is
//! called, with the month totals read at the same time as the rate-limit counters are
//! counted ([`crate::ratelimit::RateLimiter::check_with`]): no extra round trip. Over
//! budget, a 429 `budget_exceeded` saying when the month resets.
//!
//! [`Ledger::report`] answers `GET /usage`: tokens, cost and calls by day and by model over a
//! range of at most [`MAX_REPORT_DAYS`] days.

mod report;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, UNIX_EPOCH},
};

pub use report::{DayTotals, ModelTotals, Report, Totals};

use crate::{
    auth::Principal,
    config::{ConfigError, Env},
    error::Error,
    ids::{now_ms, rfc3339},
    model::{ModelUsage, Surface, Usage, UsageCounts},
    store::{UsageEntry, UsageLedger},
};

/// The longest range `GET /usage` reports, in days.
pub const MAX_REPORT_DAYS: u64 = 92;

/// USD per million tokens (input, output) of the providers' default models; the embedded
/// embedding model and the `none` provider cost nothing.
pub const DEFAULT_PRICES: &[(&str, f64, f64)] = &[
    ("gpt-4o-mini", 0.15, 0.60),
    ("claude-3-5-haiku-latest", 0.80, 4.00),
    ("gemini-1.5-flash", 0.075, 0.30),
    // Amazon Bedrock, on demand (us-east-1); an inference profile (`us.`, `eu.`, ...) is
    // priced as its model.
    ("amazon.nova-micro-v1:0", 0.035, 0.14),
    ("amazon.nova-lite-v1:0", 0.06, 0.24),
    ("amazon.nova-pro-v1:0", 0.80, 3.20),
    ("anthropic.claude-3-haiku-20240307-v1:0", 0.25, 1.25),
    ("anthropic.claude-3-5-haiku-20241022-v1:0", 0.80, 4.00),
    ("meta.llama3-1-8b-instruct-v1:0", 0.22, 0.22),
    ("amazon.titan-embed-text-v2:0", 0.02, 0.0),
    ("cohere.embed-english-v3", 0.10, 0.0),
    ("cohere.embed-multilingual-v3", 0.10, 0.0),
    ("cohere.embed-v4:0", 0.12, 0.0),
    ("text-embedding-3-small", 0.02, 0.0),
    ("text-embedding-004", 0.0, 0.0),
    ("all-minilm-l6-v2", 0.0, 0.0),
    ("none", 0.0, 0.0),
];

/// A model's price: USD per million input tokens and per million output tokens.
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
}

impl Price {
    /// The cost of `usage` in billionths of a dollar.
    fn cost_nanos(&self, usage: Usage) -> u64 {
        // USD per million tokens is thousandths of a nano-dollar per token.
        let nanos = usage.input_tokens as f64 * self.input * 1000.0 + usage.output_tokens as f64 * self.output * 1000.0;
        nanos.round().clamp(0.0, u64::MAX as f64) as u64
    }
}

/// The price table: by exact name, and by name without date or version suffixes.
#[derive(Debug, Clone, PartialEq)]
pub struct Prices {
    exact: HashMap<String, Price>,
    /// [`base_name`] of every priced name. A name that is its own base wins; among the rest,
    /// the greatest name (the newest date).
    base: HashMap<String, (bool, String, Price)>,
}

impl Prices {
    /// [`DEFAULT_PRICES`], then `COACH_PRICES`: a JSON object of model names to
    /// `{"input": usd_per_million, "output": usd_per_million}`.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let mut prices: HashMap<String, Price> =
            DEFAULT_PRICES.iter().map(|(m, i, o)| ((*m).to_owned(), Price { input: *i, output: *o })).collect();
        if let Some(json) = env.string("COACH_PRICES") {
            let more: HashMap<String, Price> = serde_json::from_str(&json).map_err(|e| ConfigError {
                var: "COACH_PRICES",
                reason: format!(
                    "expected {{\"model\": {{\"input\": usd_per_million, \"output\": usd_per_million}}}}: {e}"
                ),
            })?;
            if let Some((model, _)) = more.iter().find(|(_, p)| !(p.input >= 0.0 && p.output >= 0.0)) {
                let reason = format!("the price of {model:?} must be a number of dollars, 0 or more");
                return Err(ConfigError { var: "COACH_PRICES", reason });
            }
            prices.extend(more);
        }
        Ok(Self::new(prices))
    }

    fn new(exact: HashMap<String, Price>) -> Self {
        let mut base: HashMap<String, (bool, String, Price)> = HashMap::new();
        for (name, price) in &exact {
            let key = base_name(name);
            let candidate = (key == name, name.clone(), *price);
            match base.get(key) {
                Some(known) if (known.0, &known.1) >= (candidate.0, &candidate.1) => {}
                _ => {
                    base.insert(key.to_owned(), candidate);
                }
            }
        }
        Self { exact, base }
    }

    /// The price of a name exactly as listed.
    pub fn get(&self, model: &str) -> Option<Price> {
        self.exact.get(model).copied()
    }

    /// The price of a call the provider answered as `served` when `requested` was asked:
    /// by the served name, then the requested one, then the served name's [`base_name`].
    pub fn lookup(&self, served: &str, requested: &str) -> Option<Price> {
        self.get(served)
            .or_else(|| self.get(requested))
            .or_else(|| self.base.get(base_name(served)).map(|(_, _, price)| *price))
    }
}

/// A model name without its date and version suffixes, as providers add them to the name
/// they serve: `@…` (`claude-3-5-haiku@20241022`), `-latest`, a date (`-2024-07-18`,
/// `-20241022`, `-0613`) or a version number (`-002`), a Bedrock version (`:0`), repeatedly: `gpt-4o-mini-2024-07-18` is `gpt-4o-mini`. A name that is all suffix stays.
/// A Bedrock inference profile's geography (`us.`, `eu.`, `apac.`, `global.`, ...) goes too:
/// `us.amazon.nova-lite-v1:0` is priced as `amazon.nova-lite-v1:0`.
pub fn base_name(model: &str) -> &str {
    let mut name = model.split('@').next().unwrap_or(model);
    if let Some((geography, rest)) = name.split_once('.') {
        let geographies = ["us", "eu", "apac", "global", "us-gov", "jp", "au", "ca"];
        if geographies.contains(&geography) && rest.contains('.') {
            name = rest;
        }
    }
    loop {
        let shorter = strip_version(name);
        if shorter.is_empty() || shorter.len() == name.len() {
            return name;
        }
        name = shorter;
    }
}

/// `name` without one trailing version suffix (see [`base_name`]), or `name` itself.
fn strip_version(name: &str) -> &str {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    // Bedrock's `:0` (its `-v1`, `-v2` may name different models: Titan's).
    if let Some((head, _)) = name.rsplit_once(':').filter(|(_, tail)| digits(tail)) {
        return head;
    }
    // `-2024-07-18`.
    let dated = |tail: &str| {
        let b = tail.as_bytes();
        b.len() == 11
            && b[0] == b'-'
            && b[5] == b'-'
            && b[8] == b'-'
            && [1..5, 6..8, 9..11].map(|r| digits(&tail[r])) == [true; 3]
    };
    if name.len() > 11 && name.is_char_boundary(name.len() - 11) && dated(&name[name.len() - 11..]) {
        return &name[..name.len() - 11];
    }
    // `-latest`, `-20241022`, `-0613`, `-002`.
    match name.rsplit_once('-') {
        Some((head, tail)) if tail == "latest" || (digits(tail) && matches!(tail.len(), 3 | 4 | 8)) => head,
        _ => name,
    }
}

/// Ledger settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerConfig {
    pub prices: Prices,
    /// How long the day-by-day counters are kept.
    pub retention: Duration,
}

impl LedgerConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            prices: Prices::from_env(env)?,
            retention: Duration::from_secs(env.number("COACH_USAGE_RETENTION_DAYS")? * 86_400),
        })
    }
}

/// What a budget counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetUnit {
    Usd,
    Tokens,
}

/// Monthly budgets (`COACH_BUDGET_*`); `None` is no budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetConfig {
    pub unit: BudgetUnit,
    pub user_monthly: Option<f64>,
    pub tenant_monthly: Option<f64>,
}

impl BudgetConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let unit = match env.text("COACH_BUDGET_UNIT").to_ascii_lowercase().as_str() {
            "usd" => BudgetUnit::Usd,
            "tokens" => BudgetUnit::Tokens,
            other => {
                let reason = format!("expected usd or tokens, got {other:?}");
                return Err(ConfigError { var: "COACH_BUDGET_UNIT", reason });
            }
        };
        let budget = |var| Ok::<_, ConfigError>(Some(f64::from(env.float(var)?)).filter(|b| *b > 0.0));
        Ok(Self {
            unit,
            user_monthly: budget("COACH_BUDGET_USER_MONTHLY")?,
            tenant_monthly: budget("COACH_BUDGET_TENANT_MONTHLY")?,
        })
    }
}

/// Admission of a model-using request: the caller's rate limits counted and the monthly
/// budgets read at once, in one round trip. Build once per cold start; chat turns and the
/// one-shot routes share it.
pub struct Admission {
    limiter: crate::ratelimit::RateLimiter,
    ledger: Arc<Ledger>,
}

impl Admission {
    pub fn new(limiter: crate::ratelimit::RateLimiter, ledger: Arc<Ledger>) -> Self {
        Self { limiter, ledger }
    }

    /// Admits one request of `who` (429 `rate_limited` or `budget_exceeded`).
    pub async fn admit(&self, who: &Principal) -> Result<(), Error> {
        self.limiter.check_with(who, self.ledger.within_budget(who)).await
    }
}

/// The usage ledger and the budgets over it. Build once per cold start.
pub struct Ledger {
    store: Arc<dyn UsageLedger>,
    config: LedgerConfig,
    budgets: BudgetConfig,
    /// Models already logged as having no price.
    unpriced: Mutex<HashSet<String>>,
}

/// Today (UTC) as `YYYY-MM-DD`, and its month as `YYYY-MM`.
fn today(now_ms: u64) -> (String, String) {
    let day = rfc3339(now_ms)[..10].to_owned();
    let month = day[..7].to_owned();
    (day, month)
}

/// The start of the month after `month` (`YYYY-MM`), as RFC 3339 and epoch seconds.
fn next_month(month: &str) -> Option<(String, u64)> {
    let (year, number) = month.split_once('-')?;
    let (year, number): (u32, u32) = (year.parse().ok()?, number.parse().ok()?);
    let (year, number) = if number >= 12 { (year + 1, 1) } else { (year, number + 1) };
    let at = format!("{year:04}-{number:02}-01T00:00:00Z");
    let secs = humantime::parse_rfc3339(&at).ok()?.duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some((at, secs))
}

/// Days since the epoch of a `YYYY-MM-DD` date; `None` when it is not one.
fn epoch_day(date: &str) -> Option<u64> {
    let valid = date.len() == 10
        && date.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() });
    if !valid {
        return None;
    }
    let at = humantime::parse_rfc3339(&format!("{date}T00:00:00Z")).ok()?;
    let days = at.duration_since(UNIX_EPOCH).ok()?.as_secs() / 86_400;
    // humantime accepts some impossible dates by rolling them over: the date must read back.
    (rfc3339(days * 86_400_000)[..10] == *date).then_some(days)
}

impl Ledger {
    pub fn new(store: Arc<dyn UsageLedger>, config: LedgerConfig, budgets: BudgetConfig) -> Self {
        Self { store, config, budgets, unpriced: Mutex::new(HashSet::new()) }
    }

    /// A ledger that only records (ingest: no request of a user to admit).
    pub fn recorder(store: Arc<dyn UsageLedger>, config: LedgerConfig) -> Self {
        let no_budgets = BudgetConfig { unit: BudgetUnit::Usd, user_monthly: None, tenant_monthly: None };
        Self::new(store, config, no_budgets)
    }

    /// The estimated cost of `usage` by a model the provider answered as `served` when
    /// `requested` was asked (see [`Prices::lookup`]), in billionths of a dollar.
    pub fn cost_nanos(&self, served: &str, requested: &str, usage: Usage) -> u64 {
        match self.config.prices.lookup(served, requested) {
            Some(price) => price.cost_nanos(usage),
            None => {
                let first =
                    self.unpriced.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(served.to_owned());
                if first {
                    tracing::warn!(
                        model = served,
                        requested,
                        "no price for this model; its calls are counted at no cost (set COACH_PRICES)"
                    );
                }
                0
            }
        }
    }

    /// Records `used` (calls of one model), for `tenant` and, when a user made them, `user`,
    /// under the name the provider served. Best effort: a failure is logged, and the caller
    /// carries on.
    pub async fn record(&self, tenant: &str, user: Option<&str>, used: &ModelUsage) {
        self.record_via(tenant, user, Surface::Api, used).await;
    }

    /// Like [`Ledger::record`], for calls that came through `surface`.
    pub async fn record_via(&self, tenant: &str, user: Option<&str>, surface: Surface, used: &ModelUsage) {
        let now = now_ms();
        let (day, month) = today(now);
        let (model, usage) = (used.model.as_str(), used.usage);
        let counts = UsageCounts {
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cost_nanos: self.cost_nanos(model, &used.requested, usage),
            requests: used.calls,
        };
        let day_expires_at = now / 1000 + self.config.retention.as_secs();
        let entry = UsageEntry { tenant, user, day: &day, month: &month, model, surface, counts, day_expires_at };
        if let Err(e) = self.store.add(&entry).await {
            tracing::warn!(problem = %e, model, "could not record usage");
            crate::metrics::usage_unrecorded();
        }
    }

    /// Records what `who`'s request used, model by model (see [`Ledger::record`]).
    pub async fn record_for(&self, who: &Principal, used: &[ModelUsage]) {
        self.record_for_via(who, Surface::Api, used).await;
    }

    /// Like [`Ledger::record_for`], for a request that came through `surface`.
    pub async fn record_for_via(&self, who: &Principal, surface: Surface, used: &[ModelUsage]) {
        let records = used.iter().map(|u| self.record_via(&who.tenant, Some(&who.user_id), surface, u));
        futures_util::future::join_all(records).await;
    }

    /// Whether `who` (and their tenant) may still use the model this month: a 429
    /// `budget_exceeded` once a budget is used up, a 503 when the totals cannot be read.
    pub async fn within_budget(&self, who: &Principal) -> Result<(), Error> {
        let (user_budget, tenant_budget) = (self.budgets.user_monthly, self.budgets.tenant_monthly);
        if user_budget.is_none() && tenant_budget.is_none() {
            return Ok(());
        }
        let (_, month) = today(now_ms());
        let read = |user: Option<&str>, budget: Option<f64>| {
            let month = month.clone();
            let user = user.map(str::to_owned);
            async move {
                match budget {
                    Some(_) => self.store.month(&who.tenant, user.as_deref(), &month).await.map(Some),
                    None => Ok(None),
                }
            }
        };
        let (user, tenant) = tokio::try_join!(read(Some(&who.user_id), user_budget), read(None, tenant_budget))
            .map_err(|e| Error::unavailable("the usage ledger is unavailable", e))?;
        let spent = |counts: &UsageCounts| match self.budgets.unit {
            BudgetUnit::Usd => counts.cost_nanos as f64 / 1e9,
            BudgetUnit::Tokens => (counts.input_tokens + counts.output_tokens) as f64,
        };
        let over = [("user", user, user_budget), ("tenant", tenant, tenant_budget)]
            .into_iter()
            .find(|(_, counts, budget)| matches!((counts, budget), (Some(c), Some(b)) if spent(c) >= *b));
        let Some((scope, _, _)) = over else { return Ok(()) };
        let (reset_at, reset_secs) = next_month(&month).unwrap_or_else(|| (String::new(), now_ms() / 1000 + 86_400));
        tracing::info!(tenant = %who.tenant, scope, "monthly budget used up");
        crate::metrics::rate_limited("budget");
        Err(Error::BudgetExceeded {
            scope,
            reset_at,
            retry_after_secs: reset_secs.saturating_sub(now_ms() / 1000).max(1),
            tenant: who.tenant.clone(),
            user_id: who.user_id.clone(),
        })
    }

    /// Usage of `tenant` (or of its `user`) from `from` to `to` (`YYYY-MM-DD`, inclusive; by
    /// default the current month so far), by day and by model.
    pub async fn report(
        &self,
        tenant: &str,
        user: Option<&str>,
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<Report, Error> {
        let (today, month) = today(now_ms());
        let from = from.map(str::to_owned).unwrap_or_else(|| format!("{month}-01"));
        let to = to.map(str::to_owned).unwrap_or(today);
        let bad = |field: &str| Error::BadRequest(format!("{field} must be a date, YYYY-MM-DD"));
        let (first, last) = (epoch_day(&from).ok_or_else(|| bad("from"))?, epoch_day(&to).ok_or_else(|| bad("to"))?);
        if last < first {
            return Err(Error::BadRequest("to must not be before from".into()));
        }
        if last - first + 1 > MAX_REPORT_DAYS {
            return Err(Error::BadRequest(format!("a report covers at most {MAX_REPORT_DAYS} days")));
        }
        // A tenant's report also counts the ratings its users gave replies.
        let feedback = async {
            match user {
                Some(_) => Ok(None),
                None => self.store.feedback(tenant, &from, &to).await.map(Some),
            }
        };
        let (rows, feedback) = tokio::try_join!(self.store.days(tenant, user, &from, &to), feedback)
            .map_err(|e| Error::unavailable("the usage ledger is unavailable", e))?;
        let mut report = Report::of(from.clone(), to.clone(), rows);
        report.feedback = feedback;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn costs_follow_the_price_table_and_coach_prices() {
        let lookup = env(&[(
            "COACH_PRICES",
            r#"{"my-model": {"input": 3.0, "output": 15.0}, "gpt-4o-mini": {"input": 1.0, "output": 2.0}}"#,
        )]);
        let prices = Prices::from_env(&Env(&lookup)).unwrap();
        let usage = Usage { input_tokens: 1_000, output_tokens: 500 };
        // 1,000 × $3/M + 500 × $15/M = $0.003 + $0.0075.
        assert_eq!(prices.get("my-model").unwrap().cost_nanos(usage), 10_500_000);
        assert_eq!(prices.get("gpt-4o-mini"), Some(Price { input: 1.0, output: 2.0 }), "overridden");
        assert_eq!(prices.get("claude-3-5-haiku-latest"), Some(Price { input: 0.80, output: 4.00 }), "kept");
        // A single input token of a cheap embedding model still counts.
        let embedding = prices.get("text-embedding-3-small").unwrap();
        assert_eq!(embedding.cost_nanos(Usage { input_tokens: 1, output_tokens: 0 }), 20);
        for bad in ["[1]", r#"{"m": {"input": -1, "output": 0}}"#, r#"{"m": {"input": 1}}"#, "{"] {
            let vars = [("COACH_PRICES", bad)];
            let lookup = env(&vars);
            assert_eq!(Prices::from_env(&Env(&lookup)).unwrap_err().var, "COACH_PRICES", "{bad}");
        }
    }

    #[test]
    fn served_names_are_priced_as_the_requested_or_undated_name() {
        let lookup = env(&[("COACH_PRICES", r#"{"my-model-2025-01-31": {"input": 2.0, "output": 4.0}}"#)]);
        let prices = Prices::from_env(&Env(&lookup)).unwrap();
        let mini = prices.get("gpt-4o-mini");
        // What the providers answer for their default models.
        assert_eq!(prices.lookup("gpt-4o-mini-2024-07-18", "gpt-4o-mini"), mini, "the requested name");
        assert_eq!(prices.lookup("gpt-4o-mini-2024-07-18", "something-else"), mini, "the served name undated");
        let haiku = prices.get("claude-3-5-haiku-latest");
        assert_eq!(prices.lookup("claude-3-5-haiku-20241022", "claude-3-5-haiku-20241022"), haiku);
        assert_eq!(prices.lookup("claude-3-5-haiku@20241022", ""), haiku, "a Vertex name");
        let flash = prices.get("gemini-1.5-flash");
        assert_eq!(prices.lookup("gemini-1.5-flash-002", "gemini-1.5-flash-002"), flash);
        // COACH_PRICES may name a dated name, which then prices the undated one too.
        let mine = Some(Price { input: 2.0, output: 4.0 });
        assert_eq!(prices.lookup("my-model-2025-01-31", ""), mine);
        assert_eq!(prices.lookup("my-model-latest", "my-model"), mine);
        // The served name first, exact names before undated ones, and no guessing past that.
        assert_eq!(prices.lookup("gpt-4o-mini", "claude-3-5-haiku-latest"), mini);
        assert_eq!(prices.lookup("gpt-4o-2024-08-06", "gpt-4o"), None, "gpt-4o is not gpt-4o-mini");
        assert_eq!(prices.lookup("text-embedding-3-large", ""), None);
    }

    #[test]
    fn base_names_drop_dates_and_versions() {
        for (name, base) in [
            ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
            ("claude-3-5-haiku-20241022", "claude-3-5-haiku"),
            ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
            ("claude-3-5-haiku@20241022", "claude-3-5-haiku"),
            ("gemini-1.5-flash-002", "gemini-1.5-flash"),
            ("gpt-4-0613", "gpt-4"),
            ("anthropic.claude-3-5-haiku-20241022-v1:0", "anthropic.claude-3-5-haiku-20241022-v1"),
            ("amazon.titan-embed-text-v2:0", "amazon.titan-embed-text-v2"),
            ("us.anthropic.claude-3-5-haiku-20241022-v1:0", "anthropic.claude-3-5-haiku-20241022-v1"),
            ("eu.amazon.nova-lite-v1:0", "amazon.nova-lite-v1"),
            ("us.example", "us.example"),
            ("gpt-4o-mini", "gpt-4o-mini"),
            ("gemini-1.5-flash", "gemini-1.5-flash"),
            ("o3-mini", "o3-mini"),
            ("2024-07-18", "2024-07-18"),
            ("latest", "latest"),
            ("", ""),
        ] {
            assert_eq!(base_name(name), base, "{name}");
        }
    }

    #[test]
    fn budgets_are_off_at_zero_and_counted_in_dollars_or_tokens() {
        let lookup = env(&[]);
        let none = BudgetConfig::from_env(&Env(&lookup)).unwrap();
        assert_eq!((none.user_monthly, none.tenant_monthly, none.unit), (None, None, BudgetUnit::Usd));
        let lookup = env(&[("COACH_BUDGET_USER_MONTHLY", "2.5"), ("COACH_BUDGET_UNIT", "tokens")]);
        let set = BudgetConfig::from_env(&Env(&lookup)).unwrap();
        assert_eq!((set.user_monthly, set.tenant_monthly, set.unit), (Some(2.5), None, BudgetUnit::Tokens));
        let lookup = env(&[("COACH_BUDGET_UNIT", "euros")]);
        assert_eq!(BudgetConfig::from_env(&Env(&lookup)).unwrap_err().var, "COACH_BUDGET_UNIT");
    }

    #[test]
    fn dates_months_and_resets() {
        assert_eq!(today(1_795_370_400_123), ("2026-11-22".to_owned(), "2026-11".to_owned()));
        assert_eq!(next_month("2026-11").unwrap().0, "2026-12-01T00:00:00Z");
        assert_eq!(next_month("2026-12").unwrap().0, "2027-01-01T00:00:00Z");
        assert_eq!(epoch_day("1970-01-02"), Some(1));
        for bad in ["2026-02-30", "2026-13-01", "26-11-01", "2026-11-1", "2026/11/01", "", "2026-11-01T00"] {
            assert_eq!(epoch_day(bad), None, "{bad}");
        }
    }
}
