//! Hugging Face vision encoders: our ViT and CLIP vision tower against `transformers` on the
//! same weights and images, both for checkpoints we write and for checkpoints `transformers`
//! writes (skipped with the reason where torch and transformers are not installed).

use std::path::Path;
use std::process::Command;

use burn::backend::Flex;
use burn::prelude::*;
use mergesearch::checkpoint::Model;
use mergesearch::record::{Status, read_journal};
use mergesearch::vision::benchmark::VisionBenchmark;
use mergesearch::vision::hf::{
    load_encoder, random_encoder, read_arch, standalone_naming, write_encoder,
};
use mergesearch::vision::inputs::{Preprocessing, read_inputs};
use mergesearch::vision::{Family, VisionArch};
use mergesearch::zoo::build::write_model;
use mergesearch::zoo::model::{Encoder, TensorSource};
use mergesearch::zoo::tasks::Split;

use crate::common::{TempDir, transformers_missing};
use crate::faults::{expect_exit, mergesearch};

type B = Flex;

/// The largest and the mean absolute difference of `a` and `b`.
fn differences(a: &[f32], b: &[f32]) -> (f32, f32) {
    let d: Vec<f32> = a.iter().zip(b).map(|(x, y)| (x - y).abs()).collect();
    let max = d.iter().copied().fold(0.0, f32::max);
    (max, d.iter().sum::<f32>() / d.len().max(1) as f32)
}

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
    differences(&ours, &theirs).0
}

#[test]
fn our_vit_and_clip_compute_the_features_transformers_computes() {
    if transformers_missing() {
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
        // Images of another size, PNG and JPEG, prepared as the model's image processor says.
        let images = tmp.join(&format!("images-{name}"));
        std::fs::create_dir_all(&images).unwrap();
        for i in 0..3u64 {
            write_image(&images.join(format!("{i}.png")), 24, 20, i);
        }
        write_image(&images.join("3.jpg"), 20, 28, 3);
        let arch = read_arch(&theirs).unwrap();
        let ours = read_inputs(&images, &arch, || Preprocessing::read(&theirs, 3)).unwrap();
        let out = tmp.join(&format!("pixels-{name}"));
        python(&[
            "preprocess",
            theirs.to_str().unwrap(),
            images.to_str().unwrap(),
            out.to_str().unwrap(),
        ]);
        let expected = Model::open(&out).unwrap().read_f32("pixels").unwrap();
        assert_eq!(ours.pixels.len(), expected.len(), "{name}: pixel counts");
        let per_image = arch.pixels();
        for (i, (a, b)) in ours
            .pixels
            .chunks(per_image)
            .zip(expected.chunks(per_image))
            .enumerate()
        {
            let (max, mean) = differences(a, b);
            eprintln!(
                "{name}, image {i}: |our pixels - the image processor's|: max {max:.3}, mean {mean:.4} (normalized units)"
            );
            assert!(
                mean < 0.01 && max < 0.25,
                "{name}: image {i} is prepared differently: max {max}, mean {mean}"
            );
        }
    }
}

/// Runs mergesearch with `args`, which must succeed.
fn succeed(args: &[&str], what: &str) {
    let out = mergesearch(args).output().unwrap();
    expect_exit(&out, 0, what);
}

/// Writes a `side` x `side` RGB PNG of pseudo-random bytes from `seed`.
fn write_png(path: &Path, side: u32, seed: u64) {
    write_image(path, side, side, seed);
}

/// Writes a `width` x `height` RGB image of pseudo-random bytes from `seed`, in the format its
/// extension names.
fn write_image(path: &Path, width: u32, height: u32, seed: u64) {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let bytes: Vec<u8> = (0..width * height * 3)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    image::RgbImage::from_raw(width, height, bytes)
        .unwrap()
        .save(path)
        .unwrap();
}

/// A model directory of `arch` in `dir`: the base's weights (seed 1) plus random noise of
/// `scale` (0 for the base), with a preprocessor config.
fn write_model_dir(dir: &Path, arch: &VisionArch, scale: f32) {
    let device = Default::default();
    let base = random_encoder::<B>(arch, 1, &device);
    let tensors: Vec<_> = base
        .export()
        .into_iter()
        .map(|(name, shape, t)| {
            let noise = Tensor::<B, 1>::random(
                t.dims(),
                burn::tensor::Distribution::Normal(0.0, 1.0),
                &device,
            );
            (name, shape, t + noise.mul_scalar(scale))
        })
        .collect();
    let template = Encoder::template(arch, standalone_naming(arch.family), &device);
    let encoder = template.import(&TensorSource::new(tensors)).unwrap();
    write_encoder(&encoder, arch, dir).unwrap();
    std::fs::write(
        dir.join("preprocessor_config.json"),
        r#"{"do_normalize": true, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25], "rescale_factor": 0.00392156862745098}"#,
    )
    .unwrap();
}

/// Two tasks of 3 and 4 classes: heads, a folder of 12 labelled PNGs each (the test split),
/// and for validation one task's folder and the other's pixels as a safetensors file. CLIP's
/// heads see unit-length features, as zero-shot heads do.
fn write_tasks(tmp: &TempDir, arch: &VisionArch) -> std::path::PathBuf {
    let device = Default::default();
    let mut text = format!("unit_features = {}\n", arch.family == Family::Clip);
    for (t, (name, classes)) in [("alpha", 3usize), ("beta", 4usize)]
        .into_iter()
        .enumerate()
    {
        let head = tmp.join(&format!("heads/{name}"));
        let width = arch.feature_width();
        let weight = Tensor::<B, 1>::random(
            [classes * width],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let bias = Tensor::<B, 1>::zeros([classes], &device);
        write_model(
            &head,
            vec![
                ("weight".into(), vec![classes, width], weight),
                ("bias".into(), vec![classes], bias),
            ],
        )
        .unwrap();
        let images = tmp.join(&format!("images/{name}"));
        std::fs::create_dir_all(&images).unwrap();
        let mut labels = String::new();
        for i in 0..12u64 {
            write_png(&images.join(format!("{i:03}.png")), 16, 100 * t as u64 + i);
            labels.push_str(&format!("{}\n", i as usize % classes));
        }
        std::fs::write(images.join("labels.txt"), labels).unwrap();
        let validation = if t == 0 {
            images.display().to_string()
        } else {
            let pixels = tmp.join(&format!("pixels/{name}"));
            let values = Tensor::<B, 1>::random(
                [10 * arch.pixels()],
                burn::tensor::Distribution::Normal(0.0, 1.0),
                &device,
            );
            let labels: Vec<f32> = (0..10).map(|i| (i % classes) as f32).collect();
            write_model(
                &pixels,
                vec![
                    ("pixels".into(), vec![10, 3, 16, 16], values),
                    (
                        "labels".into(),
                        vec![10],
                        Tensor::from_data(TensorData::new(labels, [10]), &device),
                    ),
                ],
            )
            .unwrap();
            pixels.join("model.safetensors").display().to_string()
        };
        text.push_str(&format!(
            "[[tasks]]\nname = \"{name}\"\nhead = {:?}\ntest = {:?}\nvalidation = {validation:?}\n",
            head.join("model.safetensors").display().to_string(),
            images.display().to_string(),
        ));
    }
    let file = tmp.join("tasks.toml");
    std::fs::write(&file, text).unwrap();
    file
}

#[test]
fn adamerging_and_a_search_run_on_your_own_vit_and_clip() {
    for (family, label) in [(Family::Vit, "vit"), (Family::Clip, "clip")] {
        let tmp = TempDir::new("vision", &format!("own-{label}"));
        let arch = VisionArch::tiny(family);
        let base = tmp.join("base");
        write_model_dir(&base, &arch, 0.0);
        let experts: Vec<String> = (0..2)
            .map(|e| {
                let dir = tmp.join(&format!("expert{e}"));
                write_model_dir(&dir, &arch, 0.05);
                format!("{:?}", dir.display().to_string())
            })
            .collect();
        let tasks = write_tasks(&tmp, &arch);
        let space = tmp.join("space.toml");
        std::fs::write(
            &space,
            format!(
                "name = \"own-{label}\"\nseed = 3\n[models]\nbase = {:?}\nexperts = [{}]\ntasks = {:?}\n[merge]\nmethod = \"task_arithmetic\"\ngranularity = \"layer\"\n[[params]]\nname = \"weight\"\nscope = \"expert\"\nlow = 0.0\nhigh = 1.0\n[[evaluators]]\nkind = \"vision\"\nbenchmark = {:?}\nsplit = \"validation\"\nmetrics = [\"accuracy\"]\nsubset = {{ size = 6 }}\n[[objectives]]\nname = \"mean/accuracy\"\n[budget]\ntrials = 10\nbatch = 5\n",
                base.display().to_string(),
                experts.join(", "),
                tasks.display().to_string(),
                tasks.display().to_string(),
            ),
        )
        .unwrap();
        let space = space.to_str().unwrap();

        // AdaMerging, layer-wise, on the unlabeled test images.
        let ada = tmp.join("adamerge");
        succeed(
            &[
                "adamerge",
                space,
                "--granularity",
                "layer",
                "--steps",
                "4",
                "--batch",
                "4",
                "--out",
                ada.to_str().unwrap(),
            ],
            &format!("{label}: adamerge"),
        );
        let steps = read_journal(&ada).unwrap();
        assert_eq!(steps.len(), 5, "{label}: the start and 4 steps");
        for t in &steps {
            let loss = t.scores["entropy"].value;
            assert!(
                loss.is_finite() && loss >= 0.0,
                "{label}: step {}: {loss}",
                t.id
            );
        }
        assert_ne!(
            steps[0].point, steps[4].point,
            "{label}: the coefficients moved"
        );

        // A 10-trial search scored by the vision evaluator on the validation inputs.
        let run = tmp.join("run");
        succeed(
            &[
                "run",
                space,
                "--optimizer",
                "random",
                "--out",
                run.to_str().unwrap(),
            ],
            &format!("{label}: run"),
        );
        let trials = read_journal(&run).unwrap();
        assert_eq!(trials.len(), 10, "{label}");
        for t in &trials {
            assert_eq!(t.status, Status::Ok, "{label}: {:?}", t.error);
            for key in ["alpha/accuracy", "beta/accuracy", "mean/accuracy"] {
                let v = t.scores[key].value;
                assert!((0.0..=1.0).contains(&v), "{label}: {key} = {v}");
            }
        }

        // Optimizers compared on the same space.
        let compared = tmp.join("compare");
        succeed(
            &[
                "compare",
                space,
                "--optimizers",
                "random,cmaes",
                "--seeds",
                "0",
                "--budget",
                "5",
                "--out",
                compared.to_str().unwrap(),
            ],
            &format!("{label}: compare"),
        );

        // Without labels, AdaMerging still runs (and reports no accuracy); an accuracy
        // objective is refused, naming the task.
        std::fs::remove_file(tmp.join("images/alpha/labels.txt")).unwrap();
        let unlabelled = tmp.join("unlabelled");
        succeed(
            &[
                "adamerge",
                space,
                "--steps",
                "2",
                "--batch",
                "4",
                "--out",
                unlabelled.to_str().unwrap(),
            ],
            &format!("{label}: adamerge without labels"),
        );
        let last = read_journal(&unlabelled).unwrap().pop().unwrap();
        assert!(!last.scores.contains_key("mean/accuracy"), "{label}");
        let out = mergesearch(&["eval", space, "--point", "[0.5, 0.5]"])
            .output()
            .unwrap();
        let err = expect_exit(&out, 2, &format!("{label}: accuracy without labels"));
        assert!(err.contains("\"alpha\"") && err.contains("labels"), "{err}");
    }
}

#[test]
fn bad_inputs_and_heads_are_named() {
    let tmp = TempDir::new("vision", "bad");
    let arch = VisionArch::tiny(Family::Vit);
    let base = tmp.join("base");
    write_model_dir(&base, &arch, 0.0);
    let tasks = write_tasks(&tmp, &arch);
    let error = || {
        VisionBenchmark::read(&tasks)
            .and_then(|b| b.scorer::<B>(&base, Split::Test, &Default::default()))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    assert_eq!(error(), "", "the fixture itself is valid");
    // An image of another size.
    let image = tmp.join("images/beta/003.png");
    write_png(&image, 8, 1);
    let e = error();
    assert!(
        e.contains("003.png") && e.contains("8x8") && e.contains("16x16"),
        "{e}"
    );
    write_png(&image, 16, 1);
    // A file that is not a PNG.
    std::fs::write(tmp.join("images/alpha/005.png"), b"not a png").unwrap();
    let e = error();
    assert!(
        e.contains("005.png") && e.contains("PNG") && e.contains("alpha"),
        "{e}"
    );
    write_png(&tmp.join("images/alpha/005.png"), 16, 5);
    // Fewer labels than images.
    std::fs::write(tmp.join("images/alpha/labels.txt"), "0\n1\n").unwrap();
    let e = error();
    assert!(
        e.contains("labels.txt") && e.contains("2 labels for 12 images"),
        "{e}"
    );
    std::fs::write(tmp.join("images/alpha/labels.txt"), "0\n".repeat(12)).unwrap();
    // No preprocessor config for an image folder.
    std::fs::remove_file(base.join("preprocessor_config.json")).unwrap();
    let e = error();
    assert!(e.contains("preprocessor_config.json"), "{e}");
    // A head for another width.
    write_model_dir(&base, &arch, 0.0);
    let head = tmp.join("heads/alpha");
    let wrong = Tensor::<B, 1>::zeros([3 * 7], &Default::default());
    write_model(&head, vec![("weight".into(), vec![3, 7], wrong)]).unwrap();
    let e = error();
    assert!(
        e.contains("heads/alpha") && e.contains("[3, 7]") && e.contains("32 features"),
        "{e}"
    );
}
