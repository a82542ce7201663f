//! The zoo's baseline table and the subset study, on a tiny zoo.

use burn::backend::Flex;
use indicatif::ProgressBar;
use mergesearch::eval::{Strategy, StudyConfig, subset_study};
use mergesearch::zoo::baselines::Baselines;
use mergesearch::zoo::build::read_manifest;
use mergesearch::zoo::tasks::Split;

use crate::common::TempDir;
use crate::eval::tiny_zoo;

#[test]
fn the_baseline_table_has_every_row_and_the_experts_match_their_manifest() {
    let tmp = TempDir::new("zoo", "table");
    let zoo = tmp.join("zoo");
    tiny_zoo(&zoo);
    let manifest = read_manifest(&zoo).unwrap().unwrap();
    let baselines =
        Baselines::<Flex>::open(&zoo, &Default::default(), &Default::default()).unwrap();
    let table = baselines.table(&zoo, &ProgressBar::hidden()).unwrap();
    let methods: Vec<&str> = table.rows.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(
        methods,
        [
            "base",
            "individual experts",
            "weight averaging",
            "task arithmetic",
            "task arithmetic",
            "TIES"
        ]
    );
    assert_eq!(table.rows[3].setting, "lambda 0.3");
    assert!(table.rows[4].setting.ends_with("(best on validation)"));
    for (t, task) in manifest.tasks.iter().enumerate() {
        assert!(
            (table.rows[1].accuracy[t] - task.metrics.test_accuracy).abs() < 1e-9,
            "{}",
            task.name
        );
    }
    for row in &table.rows {
        assert_eq!(row.accuracy.len(), 8);
        assert!(row.accuracy.iter().all(|a| (0.0..=1.0).contains(a)));
    }
    let markdown = table.markdown();
    assert_eq!(markdown.lines().count(), 2 + table.rows.len());
    assert!(
        markdown.starts_with("| method | setting | digits |"),
        "{markdown}"
    );
}

#[test]
fn the_subset_study_reports_every_strategy_and_size_and_full_subsets_are_exact() {
    let tmp = TempDir::new("zoo", "study");
    let zoo = tmp.join("zoo");
    tiny_zoo(&zoo);
    let config = StudyConfig {
        merges: 4,
        sizes: vec![10, 60],
        draws: 2,
        split: Split::Test,
        seed: 0,
    };
    let study =
        subset_study::<Flex>(&zoo, &config, &Default::default(), &ProgressBar::hidden()).unwrap();
    assert_eq!(study.rows.len(), 6);
    assert_eq!(study.split_items, 60);
    for row in &study.rows {
        if row.size == 60 {
            // The whole split: every strategy's estimate is the full score.
            assert!(row.mean_error < 1e-9 && row.task_error < 1e-9, "{row:?}");
        }
        assert!(row.max_error >= row.mean_error);
    }
    assert!(study.rows.iter().any(|r| r.strategy == Strategy::Anchors));
    assert!(
        zoo.join("panel-test.json").exists(),
        "the anchors' panel is cached"
    );
}
