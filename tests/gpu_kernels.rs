//! The GPU merge kernels against the host engine (`merge::engine::cube::check`), on wgpu
//! (`--features wgpu`), which needs a Vulkan, Metal or DX12 adapter; CI installs Mesa's software
//! Vulkan driver (lavapipe) and sets `MERGESEARCH_REQUIRE_ADAPTER=1`, which makes a missing adapter
//! a failure; elsewhere, without an adapter the test says so and passes.
//!
//! Kept entries (rank bounds, random draws, rescale factors, dtype packing) must be bit-identical;
//! merged values within `check::BOUND`, since Vulkan's `fma` may round twice. A TIES election
//! whose weighted sum lies within that rounding of zero may go the other way — with bf16 inputs
//! exact cancellations are common (lavapipe: 30 of 210 000 elements in one case), and consensus
//! votes likewise — so such decisions may differ on at most one element in 2 000. On CUDA, `mergesearch check-device` demands
//! identical bits everywhere.

use cubecl::Runtime;
use cubecl::wgpu::{WgpuDevice, WgpuRuntime};
use mergesearch::merge::engine::cube::check::compare_engines;

/// The wgpu client, or `None` (with the reason printed) where no adapter is found.
fn client() -> Option<cubecl::prelude::ComputeClient<WgpuRuntime>> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let client = std::panic::catch_unwind(|| WgpuRuntime::client(&WgpuDevice::default()));
    std::panic::set_hook(hook);
    client
        .map_err(|_| {
            let why =
                "no wgpu adapter (install a Vulkan driver, e.g. Debian's mesa-vulkan-drivers)";
            assert!(
                std::env::var_os("MERGESEARCH_REQUIRE_ADAPTER").is_none(),
                "MERGESEARCH_REQUIRE_ADAPTER is set but there is {why}"
            );
            eprintln!("skipped: {why}")
        })
        .ok()
}

#[test]
fn the_gpu_kernels_give_the_host_engines_results() {
    let Some(client) = client() else { return };
    let report = compare_engines(&client, |_| {});
    let wrong_masks: Vec<_> = report.masks.iter().filter(|c| c.differing > 0).collect();
    assert!(
        wrong_masks.is_empty(),
        "kept entries differ: {wrong_masks:#?}"
    );
    let mut exact = 0;
    for case in &report.merges {
        let allowed = if case.decides {
            case.elements / 2_000
        } else {
            0
        };
        assert!(
            case.beyond_bound <= allowed,
            "{}: {} of {} elements beyond the bound ({} differ)",
            case.what,
            case.beyond_bound,
            case.elements,
            case.differing
        );
        exact += usize::from(case.differing == 0);
    }
    eprintln!(
        "{} kept-entry comparisons bit-identical; {} merges within the bound, {exact} of them bit-identical",
        report.masks.len(),
        report.merges.len()
    );
    assert!(report.masks.len() > 100 && report.merges.len() > 300);
}
