//! Hugging Face vision encoders: our ViT and CLIP vision tower against `transformers` on the
//! same weights and images, both for checkpoints we write and for checkpoints `transformers`
//! writes (skipped with the reason where torch and transformers are not installed).

use std::path::Path;
use std::process::Command;

use burn::backend::Flex;
use burn::prelude::*;
use mergesearch::checkpoint::Model;
use mergesearch::vision::hf::{load_encoder, random_encoder, read_arch, write_encoder};
use mergesearch::vision::{Family, VisionArch};
use mergesearch::zoo::build::write_model;

use crate::common::{TempDir, without_transformers};

type B = Flex;

/// The reference script's path.
fn reference() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("benches/reference/hf_vision.py")
        .display()
        .to_string()
}

fn python(args: &[&str]) {
    let out = Command::new("python3")
        .arg(reference())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "hf_vision.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The largest difference between our features and `transformers`' for the model in `dir`, on
/// 5 random images.
fn max_difference(tmp: &TempDir, dir: &Path, label: &str) -> f32 {
    let device = Default::default();
    let (arch, encoder) = load_encoder::<B>(dir, &device).unwrap();
    let images = Tensor::<B, 2>::random(
        [5, arch.pixels()],
        burn::tensor::Distribution::Uniform(-1.0, 1.0),
        &device,
    );
    let pixels = tmp.join(&format!("{label}-pixels"));
    let shape = vec![5, arch.channels, arch.image_size, arch.image_size];
    let flat = images.clone().reshape([5 * arch.pixels()]);
    write_model(&pixels, vec![("pixels".into(), shape, flat)]).unwrap();
    let out = tmp.join(&format!("{label}-features"));
    python(&[
        "features",
        dir.to_str().unwrap(),
        pixels.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    let theirs = Model::open(&out).unwrap().read_f32("features").unwrap();
    let ours: Vec<f32> = encoder.forward(images).into_data().to_vec().unwrap();
    assert_eq!(ours.len(), theirs.len(), "{label}: feature counts");
    ours.iter()
        .zip(&theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

#[test]
fn our_vit_and_clip_compute_the_features_transformers_computes() {
    if let Some(why) = without_transformers() {
        eprintln!("skipped: python3 cannot import torch, transformers and safetensors ({why})");
        return;
    }
    let tmp = TempDir::new("vision", "parity");
    for (family, name) in [(Family::Vit, "vit"), (Family::Clip, "clip")] {
        // A checkpoint we write, read by transformers.
        let arch = VisionArch::tiny(family);
        let ours = tmp.join(&format!("ours-{name}"));
        write_encoder(
            &random_encoder::<B>(&arch, 11, &Default::default()),
            &arch,
            &ours,
        )
        .unwrap();
        let diff = max_difference(&tmp, &ours, &format!("ours-{name}"));
        eprintln!("{name}, written by mergesearch: max |ours - transformers| = {diff:.3e}");
        assert!(
            diff < 1e-4,
            "{name}: our checkpoint's features differ by {diff}"
        );
        // A checkpoint transformers writes (with parts we do not read), read by us.
        let theirs = tmp.join(&format!("theirs-{name}"));
        python(&["make", name, theirs.to_str().unwrap()]);
        assert_eq!(read_arch(&theirs).unwrap().family, family);
        let diff = max_difference(&tmp, &theirs, &format!("theirs-{name}"));
        eprintln!("{name}, written by transformers: max |ours - transformers| = {diff:.3e}");
        assert!(
            diff < 1e-4,
            "{name}: transformers' checkpoint's features differ by {diff}"
        );
    }
}
