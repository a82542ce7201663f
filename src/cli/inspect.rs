//! `mergesearch inspect MODEL`: the tensors, the layer groups at each granularity, the total size.

use std::fmt::Write;

use crate::checkpoint::{Granularity, LayerGroups, Model, NamedGranularity};

/// Renders the inspection report of `model`.
pub fn report(model: &Model) -> Result<String, crate::checkpoint::GroupError> {
    let mut out = String::new();
    let tensors = model.tensors();
    let _ = writeln!(out, "model: {}", model.path().display());
    let name_width = tensors
        .iter()
        .map(|t| t.info.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(
        out,
        "\n{:<name_width$}  {:<5}  {:<18}  {:>12}",
        "name", "dtype", "shape", "bytes"
    );
    for t in tensors {
        let _ = writeln!(
            out,
            "{:<name_width$}  {:<5}  {:<18}  {:>12}",
            t.info.name,
            t.info.dtype.as_str(),
            format!("{:?}", t.info.shape),
            t.info.nbytes()
        );
    }
    let names: Vec<&str> = tensors.iter().map(|t| t.info.name.as_str()).collect();
    for named in [
        NamedGranularity::Model,
        NamedGranularity::Layer,
        NamedGranularity::Tensor,
    ] {
        let granularity = Granularity::Named(named);
        let groups = LayerGroups::new(&names, &granularity)?;
        let _ = writeln!(
            out,
            "\ngroups at granularity \"{granularity}\": {}",
            groups.len()
        );
        if named == NamedGranularity::Tensor {
            let _ = writeln!(out, "  (one per tensor, in the order above)");
            continue;
        }
        for (g, group) in groups.names.iter().enumerate() {
            let members: Vec<usize> = (0..names.len())
                .filter(|&i| groups.of_tensor[i] == g)
                .collect();
            let bytes: usize = members.iter().map(|&i| tensors[i].info.nbytes()).sum();
            let _ = writeln!(
                out,
                "  {g:>3}  {group:<40}  {:>5} tensors  {:>14} bytes",
                members.len(),
                bytes
            );
        }
    }
    let total = model.total_bytes();
    let params: usize = tensors.iter().map(|t| t.info.numel()).sum();
    let _ = writeln!(
        out,
        "\ntotal: {} tensors, {params} parameters, {total} bytes ({:.1} MB)",
        tensors.len(),
        total as f64 / 1e6
    );
    Ok(out)
}
