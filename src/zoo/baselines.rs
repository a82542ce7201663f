//! The zoo's analog of AdaMerging's Table 1: test accuracy per task and on average for the base,
//! each expert on its own task, weight averaging, task arithmetic (lambda 0.3, and the lambda
//! best on validation) and TIES (density 0.2, lambda best on validation).
//!
//! "Base" and "experts" pair each task's head (trained with its expert) with the base's or the
//! expert's encoder; merges pair it with the merged encoder. Only validation accuracy chooses a
//! lambda; test accuracy is reported.

use std::fmt::Write as _;
use std::path::Path;

use burn::prelude::*;
use indicatif::ProgressBar;

use super::build::{ZooError, model_set};
use super::evaluate::{TaskScores, ZooScorer, read_all};
use super::tasks::Split;
use crate::checkpoint::{Granularity, Model};
use crate::merge::{MergeError, MergePlan, Merger, Method, ParamValue};

/// Lambdas tried for task arithmetic: 0.05 to 1.0 in steps of 0.05.
pub const TASK_ARITHMETIC_LAMBDAS: [f64; 20] = [
    0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85,
    0.9, 0.95, 1.0,
];

/// Lambdas tried for TIES (which averages the agreeing entries): 0.2 to 2.0 in steps of 0.2.
pub const TIES_LAMBDAS: [f64; 10] = [0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0];

/// One row of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The method.
    pub method: String,
    /// Its setting (lambda and how it was chosen), empty when there is none.
    pub setting: String,
    /// Test accuracy per task, in the zoo's order.
    pub accuracy: Vec<f64>,
}

impl Row {
    /// A row of `method` at `setting` with the test accuracy of each task's `scores`.
    pub fn new(method: &str, setting: &str, scores: &[TaskScores]) -> Row {
        Row {
            method: method.into(),
            setting: setting.into(),
            accuracy: scores.iter().map(|s| s.accuracy).collect(),
        }
    }

    /// Mean test accuracy over the tasks.
    pub fn mean(&self) -> f64 {
        self.accuracy.iter().sum::<f64>() / self.accuracy.len().max(1) as f64
    }
}

/// The table: task names and rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Task names, in the zoo's order.
    pub tasks: Vec<String>,
    /// The rows, in order.
    pub rows: Vec<Row>,
}

/// The baselines failed.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    /// The zoo could not be read.
    #[error(transparent)]
    Zoo(#[from] ZooError),
    /// A merge failed.
    #[error(transparent)]
    Merge(#[from] MergeError),
}

/// Scores the merges that need no search, for `rows` to be extended by tuned methods.
pub struct Baselines<B: Backend> {
    merger: Merger<B>,
    validation: ZooScorer<B>,
    test: ZooScorer<B>,
    experts: usize,
}

impl<B: Backend> Baselines<B> {
    /// Loads the zoo in `dir` (its base and experts onto `device`, grouped at `granularity` for
    /// plans with per-group values) and both evaluation splits.
    pub fn open(
        dir: &Path,
        granularity: &Granularity,
        device: &B::Device,
    ) -> Result<Baselines<B>, BaselineError> {
        let validation = ZooScorer::open(dir, Split::Validation, device)?;
        let test = ZooScorer::open(dir, Split::Test, device)?;
        let set = model_set(dir, test.zoo_manifest("the baseline table")?)?;
        let merger = Merger::load(&set, granularity, device, &ProgressBar::hidden())?;
        Ok(Baselines {
            merger,
            validation,
            test,
            experts: set.experts.len(),
        })
    }

    /// The zoo's task names, in order.
    pub fn task_names(&self) -> Vec<String> {
        self.test.task_names().to_vec()
    }

    /// The table's rows: base, experts, weight averaging, task arithmetic, TIES.
    pub fn table(&self, dir: &Path, progress: &ProgressBar) -> Result<Table, BaselineError> {
        let manifest = self.test.zoo_manifest("the baseline table")?;
        let tasks = self.task_names();
        progress.set_length(
            (3 + self.experts + TASK_ARITHMETIC_LAMBDAS.len() + TIES_LAMBDAS.len()) as u64,
        );
        let mut rows = Vec::new();
        let base = Model::open(&dir.join(&manifest.base)).map_err(ZooError::from)?;
        rows.push(Row::new(
            "base",
            "",
            &self
                .test
                .score_tensors(read_all(&base, self.test.device())?)?,
        ));
        progress.inc(1);
        let mut own = Vec::new();
        for (t, task) in manifest.tasks.iter().enumerate() {
            let expert = Model::open(&dir.join(&task.expert)).map_err(ZooError::from)?;
            own.push(
                self.test
                    .score_tensors(read_all(&expert, self.test.device())?)?[t]
                    .accuracy,
            );
            progress.inc(1);
        }
        rows.push(Row {
            method: "individual experts".into(),
            setting: "each on its own task".into(),
            accuracy: own,
        });
        let average = self.plan(Method::Linear, &[]);
        rows.push(Row::new(
            "weight averaging",
            "",
            &self.score(&average, Split::Test)?,
        ));
        progress.inc(1);
        let ta = |lambda: f64| self.plan(Method::TaskArithmetic, &[("lambda", lambda)]);
        rows.push(Row::new(
            "task arithmetic",
            "lambda 0.3",
            &self.score(&ta(0.3), Split::Test)?,
        ));
        progress.inc(1);
        let (lambda, scores) = self.best_on_validation(&TASK_ARITHMETIC_LAMBDAS, ta, progress)?;
        rows.push(Row::new(
            "task arithmetic",
            &format!("lambda {lambda} (best on validation)"),
            &scores,
        ));
        let ties = |lambda: f64| self.plan(Method::Ties, &[("lambda", lambda), ("density", 0.2)]);
        let (lambda, scores) = self.best_on_validation(&TIES_LAMBDAS, ties, progress)?;
        rows.push(Row::new(
            "TIES",
            &format!("density 0.2, lambda {lambda} (best on validation)"),
            &scores,
        ));
        Ok(Table { tasks, rows })
    }

    /// The merge of every expert with weight 1 by `method`, with `params` (per-expert `density`,
    /// shared otherwise).
    pub fn plan(&self, method: Method, params: &[(&str, f64)]) -> MergePlan {
        let mut plan = MergePlan::new(method, self.experts, 0);
        for expert in &mut plan.experts {
            expert.insert("weight".into(), ParamValue::Number(1.0));
        }
        for &(name, value) in params {
            if name == "density" {
                for expert in &mut plan.experts {
                    expert.insert(name.into(), ParamValue::Number(value));
                }
            } else {
                plan.shared.insert(name.into(), ParamValue::Number(value));
            }
        }
        plan
    }

    /// Per-task scores of `plan` on `split`.
    pub fn score(&self, plan: &MergePlan, split: Split) -> Result<Vec<TaskScores>, BaselineError> {
        let scorer = match split {
            Split::Test => &self.test,
            _ => &self.validation,
        };
        Ok(scorer.score(&self.merger.materialize(plan)?)?)
    }

    /// The lambda of `lambdas` whose plan has the best mean validation accuracy (the smallest
    /// on ties), and that plan's test scores.
    fn best_on_validation(
        &self,
        lambdas: &[f64],
        plan: impl Fn(f64) -> MergePlan,
        progress: &ProgressBar,
    ) -> Result<(f64, Vec<TaskScores>), BaselineError> {
        let mut best = (f64::NEG_INFINITY, lambdas[0]);
        for &lambda in lambdas {
            let accuracy = mean_accuracy(&self.score(&plan(lambda), Split::Validation)?);
            if accuracy > best.0 {
                best = (accuracy, lambda);
            }
            progress.inc(1);
        }
        Ok((best.1, self.score(&plan(best.1), Split::Test)?))
    }
}

/// The mean accuracy over the tasks (0 for no task).
pub fn mean_accuracy(scores: &[TaskScores]) -> f64 {
    scores.iter().map(|s| s.accuracy).sum::<f64>() / scores.len().max(1) as f64
}

impl Table {
    /// The table as Markdown, accuracies in percent.
    pub fn markdown(&self) -> String {
        let mut out = String::from("| method | setting |");
        for task in &self.tasks {
            let _ = write!(out, " {task} |");
        }
        out.push_str(" **average** |\n|---|---|");
        out.push_str(&"---:|".repeat(self.tasks.len() + 1));
        out.push('\n');
        for row in &self.rows {
            let _ = write!(out, "| {} | {} |", row.method, row.setting);
            for a in &row.accuracy {
                let _ = write!(out, " {:.1} |", 100.0 * a);
            }
            let _ = writeln!(out, " **{:.1}** |", 100.0 * row.mean());
        }
        out
    }
}

/// Tables of the same rows from several zoos (seeds) as one Markdown table: each cell the mean and
/// the sample standard deviation of its accuracies in percent, each setting the seeds' settings
/// where they differ.
pub fn markdown_over_seeds(tables: &[Table]) -> String {
    let Some(first) = tables.first() else {
        return String::new();
    };
    let mut out = String::from("| method | setting |");
    for task in &first.tasks {
        let _ = write!(out, " {task} |");
    }
    out.push_str(" **average** |\n|---|---|");
    out.push_str(&"---:|".repeat(first.tasks.len() + 1));
    out.push('\n');
    let spread = |values: &[f64]| {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        (100.0 * mean, 100.0 * var.sqrt())
    };
    for (r, row) in first.rows.iter().enumerate() {
        let rows: Vec<&Row> = tables.iter().filter_map(|t| t.rows.get(r)).collect();
        let mut settings: Vec<&str> = rows.iter().map(|row| row.setting.as_str()).collect();
        settings.dedup();
        let _ = write!(out, "| {} | {} |", row.method, settings.join(" / "));
        for t in 0..first.tasks.len() {
            let values: Vec<f64> = rows.iter().map(|row| row.accuracy[t]).collect();
            let (mean, std) = spread(&values);
            let _ = write!(out, " {mean:.1} ± {std:.1} |");
        }
        let means: Vec<f64> = rows.iter().map(|row| row.mean()).collect();
        let (mean, std) = spread(&means);
        let _ = writeln!(out, " **{mean:.1} ± {std:.1}** |");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_over_seeds_show_each_cells_mean_and_standard_deviation() {
        let table = |a: f64, setting: &str| Table {
            tasks: vec!["x".into(), "y".into()],
            rows: vec![Row {
                method: "TIES".into(),
                setting: setting.into(),
                accuracy: vec![a, 0.5],
            }],
        };
        let text = markdown_over_seeds(&[table(0.6, "lambda 0.2"), table(0.8, "lambda 0.4")]);
        let row = text.lines().nth(2).unwrap();
        // x: 70 ± 14.1 (sample deviation of 60 and 80); y: 50 ± 0; average: 60 ± 7.1.
        assert_eq!(
            row,
            "| TIES | lambda 0.2 / lambda 0.4 | 70.0 ± 14.1 | 50.0 ± 0.0 | **60.0 ± 7.1** |"
        );
        assert!(markdown_over_seeds(&[]).is_empty());
    }
}
