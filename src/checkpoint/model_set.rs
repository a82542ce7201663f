//! A base model and its experts, checked to agree before any work starts.

use std::fmt::Write;
use std::path::Path;

use super::error::CheckpointError;
use super::model::Model;

/// How many offending tensors a mismatch report lists before summarizing the rest.
const REPORT_LIMIT: usize = 5;

/// A base and experts that share tensor names and shapes.
pub struct ModelSet {
    /// The base model (`theta_base`).
    pub base: Model,
    /// The fine-tuned experts, in the user's order.
    pub experts: Vec<Model>,
}

impl ModelSet {
    /// Opens the base and every expert and checks that they hold the same tensors with the
    /// same shapes. The error lists the first offending tensors and the file each came from.
    pub fn open(base: &Path, experts: &[impl AsRef<Path>]) -> Result<ModelSet, CheckpointError> {
        let base = Model::open(base)?;
        let experts = experts
            .iter()
            .map(|p| Model::open(p.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        let set = ModelSet { base, experts };
        set.validate()?;
        Ok(set)
    }

    fn validate(&self) -> Result<(), CheckpointError> {
        let mut problems = Vec::new();
        for expert in &self.experts {
            for entry in self.base.tensors() {
                let name = &entry.info.name;
                match expert.get(name) {
                    None => problems.push(format!(
                        "tensor {name:?} is in {} but missing from {}",
                        self.base.file_of(entry).path().display(),
                        expert.path().display()
                    )),
                    Some(other) if other.info.shape != entry.info.shape => problems.push(format!(
                        "tensor {name:?} has shape {:?} in {} but {:?} in {}",
                        entry.info.shape,
                        self.base.file_of(entry).path().display(),
                        other.info.shape,
                        expert.file_of(other).path().display()
                    )),
                    Some(_) => {}
                }
            }
            for entry in expert.tensors() {
                if self.base.get(&entry.info.name).is_none() {
                    problems.push(format!(
                        "tensor {:?} is in {} but not in the base {}",
                        entry.info.name,
                        expert.file_of(entry).path().display(),
                        self.base.path().display()
                    ));
                }
            }
        }
        if problems.is_empty() {
            return Ok(());
        }
        let mut report = String::new();
        for p in problems.iter().take(REPORT_LIMIT) {
            let _ = writeln!(report, "  {p}");
        }
        if problems.len() > REPORT_LIMIT {
            let _ = writeln!(report, "  ... and {} more", problems.len() - REPORT_LIMIT);
        }
        Err(CheckpointError::Mismatch(report.trim_end().to_string()))
    }
}
