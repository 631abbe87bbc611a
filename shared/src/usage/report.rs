//! What `GET /usage` shows: the ledger's day-and-model counters (kept per surface) added up
//! by day, by model, by surface and in total.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::{FeedbackCounts, Surface, UsageCounts};

/// Counts as `GET /usage` shows them: tokens, cost in dollars, calls.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Totals {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
    pub requests: u64,
}

impl From<UsageCounts> for Totals {
    fn from(c: UsageCounts) -> Self {
        // Dollars to the micro-dollar: the nano-dollars are an estimate's precision anyway.
        let cost_usd = (c.cost_nanos as f64 / 1000.0).round() / 1e6;
        Totals { input_tokens: c.input_tokens, output_tokens: c.output_tokens, cost_usd, requests: c.requests }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelTotals {
    pub model: String,
    #[serde(flatten)]
    pub totals: Totals,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SurfaceTotals {
    pub surface: Surface,
    #[serde(flatten)]
    pub totals: Totals,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DayTotals {
    pub date: String,
    #[serde(flatten)]
    pub totals: Totals,
    pub models: Vec<ModelTotals>,
}

/// The answer to `GET /usage`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub from: String,
    pub to: String,
    pub currency: &'static str,
    pub totals: Totals,
    /// Days with any usage, oldest first.
    pub days: Vec<DayTotals>,
    /// The whole range by model, the costliest first.
    pub models: Vec<ModelTotals>,
    /// The whole range by the interface the calls came through (`api`: Coach's own routes;
    /// `openai`: the OpenAI-compatible API), each with any usage.
    pub surfaces: Vec<SurfaceTotals>,
    /// In a tenant's report: the ratings of replies given in the range, as they stand.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feedback: Option<FeedbackCounts>,
}

impl Report {
    pub(super) fn of(from: String, to: String, rows: Vec<crate::model::DayUsage>) -> Self {
        let mut total = UsageCounts::default();
        let mut by_model: BTreeMap<String, UsageCounts> = BTreeMap::new();
        let mut by_surface: BTreeMap<Surface, UsageCounts> = BTreeMap::new();
        let mut by_day: BTreeMap<String, (UsageCounts, BTreeMap<String, UsageCounts>)> = BTreeMap::new();
        for row in rows {
            total.add(&row.counts);
            by_model.entry(row.model.clone()).or_default().add(&row.counts);
            by_surface.entry(row.surface).or_default().add(&row.counts);
            let day = by_day.entry(row.day).or_default();
            day.0.add(&row.counts);
            day.1.entry(row.model).or_default().add(&row.counts);
        }
        let days = by_day
            .into_iter()
            .map(|(date, (counts, models))| DayTotals {
                date,
                totals: counts.into(),
                models: models.into_iter().map(|(model, c)| ModelTotals { model, totals: c.into() }).collect(),
            })
            .collect();
        let surfaces = by_surface.into_iter().map(|(surface, c)| SurfaceTotals { surface, totals: c.into() }).collect();
        let mut models: Vec<(String, UsageCounts)> = by_model.into_iter().collect();
        models.sort_by(|a, b| b.1.cost_nanos.cmp(&a.1.cost_nanos).then(a.0.cmp(&b.0)));
        let models = models.into_iter().map(|(model, c)| ModelTotals { model, totals: c.into() }).collect();
        Report { from, to, currency: "USD", totals: total.into(), days, models, surfaces, feedback: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_adds_up_by_day_and_by_model() {
        let row = |day: &str, model: &str, i, o, c, r| crate::model::DayUsage {
            day: day.into(),
            model: model.into(),
            surface: Surface::Api,
            counts: UsageCounts { input_tokens: i, output_tokens: o, cost_nanos: c, requests: r },
        };
        let report = Report::of(
            "2026-11-01".into(),
            "2026-11-30".into(),
            vec![
                row("2026-11-02", "gpt-4o-mini", 100, 10, 2_500_000, 2),
                row("2026-11-02", "none", 0, 0, 0, 3),
                row("2026-11-05", "gpt-4o-mini", 50, 5, 1_000_000, 1),
                crate::model::DayUsage {
                    surface: Surface::OpenAi,
                    ..row("2026-11-05", "gpt-4o-mini", 10, 1, 500_000, 1)
                },
            ],
        );
        assert_eq!(report.totals, Totals { input_tokens: 160, output_tokens: 16, cost_usd: 0.004, requests: 7 });
        assert_eq!(report.days.len(), 2);
        assert_eq!(report.days[0].date, "2026-11-02");
        assert_eq!(report.days[0].totals.requests, 5);
        assert_eq!(report.days[0].models.len(), 2);
        // A model's calls through both surfaces are one row of the day.
        assert_eq!(report.days[1].models.len(), 1);
        assert_eq!(report.days[1].models[0].totals.requests, 2);
        assert_eq!(report.models[0].model, "gpt-4o-mini", "the costliest first");
        assert_eq!(report.models[0].totals.cost_usd, 0.004);
        let surfaces: Vec<(Surface, u64)> = report.surfaces.iter().map(|s| (s.surface, s.totals.requests)).collect();
        assert_eq!(surfaces, [(Surface::Api, 6), (Surface::OpenAi, 1)]);
    }
}
