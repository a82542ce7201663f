//! The procedural image-classification tasks of the built-in multi-task benchmark.
//!
//! A small, deterministic analog of the eight-task CLIP ViT model-merging benchmark (SUN397,
//! Cars, RESISC45, EuroSAT, SVHN, GTSRB, MNIST, DTD): eight tasks on 16x16 grayscale images, each
//! with its own label set, drawn by code from a seed. Nothing is downloaded.
//!
//! **Why these tasks.** All eight are drawn from the same few primitives — antialiased strokes,
//! discs, boxes, blobs and periodic patterns — on a dark background, under the same brightness,
//! contrast and pixel-noise jitter. They therefore share low-level features (edges at several
//! orientations, blobs, local contrast, spatial frequency), so one encoder pretrained on all of
//! them ([`pretrain_dataset`]) helps every task, as a CLIP encoder does. But each label depends on
//! a different property of the image: which glyph ([`Task::Digits`]), which outline
//! ([`Task::Shapes`]), the angle ([`Task::Orientation`]), how many ([`Task::Counting`]), where
//! ([`Task::Position`]), which periodic structure ([`Task::Texture`]), how big ([`Task::Size`]) or
//! which mirror symmetry ([`Task::Symmetry`]). Often the label of one task is a nuisance another
//! task must learn to ignore (position is random in shapes, size and counting; size is random in
//! shapes and position; stripes are the label in texture and orientation). Experts fine-tuned from
//! the shared base thus move the weights in different, partly conflicting directions, and naive
//! averaging of them interferes — the regime in which merging methods differ.
//!
//! **Images.** [`IMAGE_SIZE`] x [`IMAGE_SIZE`] pixels, one channel, row-major, `f32` in `[0, 1]`.
//! Every image gets a random background level, gain and Gaussian pixel noise, so that no task can
//! be solved from one pixel.
//!
//! **Determinism.** [`generate`] derives one stream per task and split from the seed with
//! [`derive_seed`], and from it one stream for the label order and one per example: the same
//! arguments give bit-identical datasets, and different splits or seeds give different images.

use rand::Rng as _;
use rand::RngCore as _;
use rand::seq::SliceRandom as _;
use std::f32::consts::{FRAC_1_SQRT_2, PI, TAU};
use std::fmt;

use crate::rng::{Rng, derive_seed};

/// Width and height of every image, in pixels.
pub const IMAGE_SIZE: usize = 16;

/// Pixels per image (`IMAGE_SIZE * IMAGE_SIZE`, one channel).
pub const IMAGE_PIXELS: usize = IMAGE_SIZE * IMAGE_SIZE;

/// One of the eight tasks of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Task {
    /// Digits 0-9 from 3x5 bitmap glyphs scaled 2x, translated, of random stroke width.
    Digits,
    /// Filled circle, square, triangle, cross or ring of random size and position.
    Shapes,
    /// A bar (or a grating) at one of 8 angles, 0 to 157.5 degrees in steps of 22.5.
    Orientation,
    /// 1 to 6 non-overlapping dots.
    Counting,
    /// One blob in one of the 3x3 grid cells.
    Position,
    /// Horizontal, vertical or diagonal stripes, checkerboard, dot lattice or noise.
    Texture,
    /// A filled square or circle, small, medium, large or huge.
    Size,
    /// A random block pattern that is left-right, top-bottom, both or not mirror symmetric.
    Symmetry,
}

impl Task {
    /// All tasks, in benchmark order, which is also the order of their classes in
    /// [`pretrain_dataset`]'s joint label space.
    pub const ALL: [Task; 8] = [
        Task::Digits,
        Task::Shapes,
        Task::Orientation,
        Task::Counting,
        Task::Position,
        Task::Texture,
        Task::Size,
        Task::Symmetry,
    ];

    /// The task's name: `digits`, `shapes`, `orientation`, `counting`, `position`, `texture`,
    /// `size` or `symmetry`.
    pub fn name(self) -> &'static str {
        match self {
            Task::Digits => "digits",
            Task::Shapes => "shapes",
            Task::Orientation => "orientation",
            Task::Counting => "counting",
            Task::Position => "position",
            Task::Texture => "texture",
            Task::Size => "size",
            Task::Symmetry => "symmetry",
        }
    }

    /// The task named `name` (as [`Task::name`] spells it), if any.
    pub fn from_name(name: &str) -> Option<Task> {
        Task::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The position of the task in [`Task::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The names of the task's classes; label `k` is `classes()[k]`.
    pub fn classes(self) -> &'static [&'static str] {
        match self {
            Task::Digits => &["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
            Task::Shapes => &["circle", "square", "triangle", "cross", "ring"],
            Task::Orientation => &[
                "0deg", "22.5deg", "45deg", "67.5deg", "90deg", "112.5deg", "135deg", "157.5deg",
            ],
            Task::Counting => &["1", "2", "3", "4", "5", "6"],
            Task::Position => &[
                "top-left",
                "top",
                "top-right",
                "left",
                "center",
                "right",
                "bottom-left",
                "bottom",
                "bottom-right",
            ],
            Task::Texture => &[
                "horizontal-stripes",
                "vertical-stripes",
                "diagonal-stripes",
                "checkerboard",
                "dots",
                "noise",
            ],
            Task::Size => &["small", "medium", "large", "huge"],
            Task::Symmetry => &["left-right", "top-bottom", "both", "neither"],
        }
    }

    /// The number of classes, `classes().len()`.
    pub fn num_classes(self) -> usize {
        self.classes().len()
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which part of a task's data: each split has its own random streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Data to fit on.
    Train,
    /// Data to choose hyperparameters or merge coefficients on.
    Validation,
    /// Data to report on.
    Test,
}

impl Split {
    /// All splits.
    pub const ALL: [Split; 3] = [Split::Train, Split::Validation, Split::Test];

    /// `train`, `validation` or `test`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Validation => "validation",
            Split::Test => "test",
        }
    }
}

/// Labelled images of one task (or of the pretraining mixture).
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// `len() * IMAGE_PIXELS` values in `[0, 1]`, image after image, each row-major.
    pub images: Vec<f32>,
    /// One label per image, each below `classes`.
    pub labels: Vec<u32>,
    /// The number of classes.
    pub classes: usize,
}

impl Dataset {
    /// The number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Image `i`: `IMAGE_PIXELS` values, row-major.
    pub fn image(&self, i: usize) -> &[f32] {
        &self.images[i * IMAGE_PIXELS..(i + 1) * IMAGE_PIXELS]
    }
}

/// `n` images of `task` for `split`, made from `seed`.
///
/// Each class gets `n / classes` images (the first `n % classes` classes one more), in shuffled
/// order. The same arguments give bit-identical datasets.
pub fn generate(task: Task, split: Split, n: usize, seed: u64) -> Dataset {
    let stream = derive_seed(seed, &format!("zoo/tasks/{}/{}", task, split.name()), 0);
    build(n, task.num_classes(), stream, |label, rng, out| {
        render_into(task, label, rng, out)
    })
}

/// `n` images for broad pretraining of the base model, drawn from all eight generators and
/// labelled in the joint label space of all tasks: 52 classes, each task's classes after those of
/// the tasks before it in [`Task::ALL`].
///
/// The generators take turns (balanced as in [`generate`]); within one the image's class is
/// uniform at random. The streams differ from those of [`generate`], so these images are not the
/// tasks' own.
pub fn pretrain_dataset(split: Split, n: usize, seed: u64) -> Dataset {
    let stream = derive_seed(seed, &format!("zoo/tasks/pretrain/{}", split.name()), 0);
    let mut classes = Vec::with_capacity(n);
    let mut data = build(n, Task::ALL.len(), stream, |label, rng, out| {
        let task = Task::ALL[label as usize];
        let class = rng.random_range(0..task.num_classes());
        render_into(task, class as u32, rng, out);
        classes.push(class);
    });
    let offset = |task: usize| -> usize { Task::ALL[..task].iter().map(|t| t.num_classes()).sum() };
    for (label, class) in data.labels.iter_mut().zip(classes) {
        *label = (offset(*label as usize) + class) as u32;
    }
    data.classes = offset(Task::ALL.len());
    data
}

/// Draws one image of class `label` of `task` from `rng` into `out` (`IMAGE_PIXELS` values).
///
/// # Panics
///
/// If `label` is not below `task.num_classes()` or `out` does not hold `IMAGE_PIXELS` values.
pub fn render_into(task: Task, label: u32, rng: &mut Rng, out: &mut [f32]) {
    assert!(
        (label as usize) < task.num_classes(),
        "label {label} out of range for task {task} ({} classes)",
        task.num_classes()
    );
    assert_eq!(
        out.len(),
        IMAGE_PIXELS,
        "an image holds {IMAGE_PIXELS} values"
    );
    let mut canvas = Canvas::new();
    let label = label as usize;
    match task {
        Task::Digits => draw_digit(&mut canvas, label, rng),
        Task::Shapes => draw_shape(&mut canvas, label, rng),
        Task::Orientation => draw_orientation(&mut canvas, label, rng),
        Task::Counting => draw_dots(&mut canvas, label + 1, rng),
        Task::Position => draw_position(&mut canvas, label, rng),
        Task::Texture => draw_texture(&mut canvas, label, rng),
        Task::Size => draw_size(&mut canvas, label, rng),
        Task::Symmetry => draw_symmetry(&mut canvas, label, rng),
    }
    canvas.finish(rng, out);
}

/// Balanced, shuffled labels from `stream`, and image `i` drawn by `draw` from its own stream.
fn build(
    n: usize,
    classes: usize,
    stream: u64,
    mut draw: impl FnMut(u32, &mut Rng, &mut [f32]),
) -> Dataset {
    let mut labels: Vec<u32> = (0..n).map(|i| (i % classes) as u32).collect();
    labels.shuffle(&mut Rng::new(derive_seed(stream, "labels", 0)));
    let mut images = vec![0.0; n * IMAGE_PIXELS];
    for (i, (&label, out)) in labels
        .iter()
        .zip(images.chunks_exact_mut(IMAGE_PIXELS))
        .enumerate()
    {
        let mut rng = Rng::new(derive_seed(stream, "example", i as u64));
        draw(label, &mut rng, out);
    }
    Dataset {
        images,
        labels,
        classes,
    }
}

// ---------------------------------------------------------------------------------------------
// Random helpers

/// Uniform in `[lo, hi)`.
fn uniform(rng: &mut Rng, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * rng.random::<f32>()
}

/// A fair coin.
fn coin(rng: &mut Rng) -> bool {
    rng.next_u64() >> 63 == 1
}

// ---------------------------------------------------------------------------------------------
// Drawing

/// Signed distance from `(x, y)` to the axis-aligned box centred at `(cx, cy)` with half extents
/// `hw`, `hh` (negative inside).
fn sd_box(x: f32, y: f32, cx: f32, cy: f32, hw: f32, hh: f32) -> f32 {
    let qx = (x - cx).abs() - hw;
    let qy = (y - cy).abs() - hh;
    let outside = norm(qx.max(0.0), qy.max(0.0));
    outside + qx.max(qy).min(0.0)
}

/// `sqrt(x^2 + y^2)`, without `hypot`'s (slow) care for overflow, which these small values
/// never need.
fn norm(x: f32, y: f32) -> f32 {
    (x * x + y * y).sqrt()
}

/// Squared distance from `(x, y)` to the segment from `a` to `b`.
fn dist2_segment(x: f32, y: f32, a: (f32, f32), b: (f32, f32)) -> f32 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    let t = if len2 > 0.0 {
        (((x - a.0) * dx + (y - a.1) * dy) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (ex, ey) = (x - a.0 - t * dx, y - a.1 - t * dy);
    ex * ex + ey * ey
}

/// A 16x16 drawing surface, 0 (dark) to 1 (bright) before [`Canvas::finish`].
///
/// Coordinates are continuous: pixel `(col, row)` covers `[col, col + 1) x [row, row + 1)` and is
/// sampled at its centre. Shapes are antialiased over one pixel and combined by taking the
/// brighter value, so overlapping strokes stay within `[0, 1]`.
struct Canvas {
    px: [f32; IMAGE_PIXELS],
}

impl Canvas {
    fn new() -> Canvas {
        Canvas {
            px: [0.0; IMAGE_PIXELS],
        }
    }

    /// Sets every pixel to the brighter of its value and `f(x, y)` at the pixel's centre.
    fn fill_with(&mut self, f: impl Fn(f32, f32) -> f32) {
        for (i, p) in self.px.iter_mut().enumerate() {
            let x = (i % IMAGE_SIZE) as f32 + 0.5;
            let y = (i / IMAGE_SIZE) as f32 + 0.5;
            *p = p.max(f(x, y));
        }
    }

    /// Paints the shape whose signed distance function is `sdf` (negative inside) with
    /// brightness `value`, antialiased over one pixel across its boundary.
    fn fill_sdf(&mut self, value: f32, sdf: impl Fn(f32, f32) -> f32) {
        self.fill_with(|x, y| value * (0.5 - sdf(x, y)).clamp(0.0, 1.0));
    }

    fn fill_disc(&mut self, cx: f32, cy: f32, r: f32, value: f32) {
        self.fill_sdf(value, |x, y| norm(x - cx, y - cy) - r);
    }

    /// A box centred at `(cx, cy)` with half extents `hw`, `hh`.
    fn fill_rect(&mut self, cx: f32, cy: f32, hw: f32, hh: f32, value: f32) {
        self.fill_sdf(value, |x, y| sd_box(x, y, cx, cy, hw, hh));
    }

    /// A ring of outer radius `r` and stroke half-width `half_width`.
    fn fill_ring(&mut self, cx: f32, cy: f32, r: f32, half_width: f32, value: f32) {
        let mid = r - half_width;
        self.fill_sdf(value, |x, y| {
            (norm(x - cx, y - cy) - mid).abs() - half_width
        });
    }

    /// A convex polygon (vertices in either winding order).
    fn fill_polygon(&mut self, vertices: &[(f32, f32)], value: f32) {
        let n = vertices.len();
        let twice_area: f32 = (0..n)
            .map(|i| {
                let (a, b) = (vertices[i], vertices[(i + 1) % n]);
                a.0 * b.1 - b.0 * a.1
            })
            .sum();
        let winding = twice_area.signum();
        // The largest signed distance to the edges' lines: exact inside, close outside.
        self.fill_sdf(value, |x, y| {
            (0..n)
                .map(|i| {
                    let (a, b) = (vertices[i], vertices[(i + 1) % n]);
                    let (ex, ey) = (b.0 - a.0, b.1 - a.1);
                    winding * ((x - a.0) * ey - (y - a.1) * ex) / norm(ex, ey)
                })
                .fold(f32::NEG_INFINITY, f32::max)
        });
    }

    /// A stroke with round caps from `a` to `b`.
    fn line(&mut self, a: (f32, f32), b: (f32, f32), half_width: f32, value: f32) {
        self.fill_sdf(value, |x, y| dist2_segment(x, y, a, b).sqrt() - half_width);
    }

    /// A Gaussian blob of standard deviation `sigma` and peak `value`.
    fn blob(&mut self, cx: f32, cy: f32, sigma: f32, value: f32) {
        let k = -0.5 / (sigma * sigma);
        self.fill_with(|x, y| value * (k * ((x - cx).powi(2) + (y - cy).powi(2))).exp());
    }

    /// Maps every pixel `p` to `background + gain * p`.
    fn jitter(&mut self, background: f32, gain: f32) {
        for p in &mut self.px {
            *p = background + gain * *p;
        }
    }

    /// Adds independent Gaussian noise of standard deviation `sigma` to every pixel.
    fn add_noise(&mut self, rng: &mut Rng, sigma: f32) {
        for pair in self.px.chunks_exact_mut(2) {
            // Box-Muller, both outputs.
            let radius = sigma * (-2.0 * (1.0 - rng.random::<f32>()).ln()).sqrt();
            let (s, c) = (TAU * rng.random::<f32>()).sin_cos();
            pair[0] += radius * c;
            pair[1] += radius * s;
        }
    }

    fn clamp(&mut self) {
        for p in &mut self.px {
            *p = p.clamp(0.0, 1.0);
        }
    }

    /// Random background level, gain and pixel noise, clamped to `[0, 1]`, written to `out`.
    fn finish(mut self, rng: &mut Rng, out: &mut [f32]) {
        let background = uniform(rng, 0.0, 0.12);
        let gain = uniform(rng, 0.55, 1.0);
        let sigma = uniform(rng, 0.02, 0.08);
        self.jitter(background, gain);
        self.add_noise(rng, sigma);
        self.clamp();
        out.copy_from_slice(&self.px);
    }
}

// ---------------------------------------------------------------------------------------------
// The tasks

/// 3x5 glyphs of the digits, top row first.
const GLYPHS: [[&[u8; 3]; 5]; 10] = [
    [b"###", b"#.#", b"#.#", b"#.#", b"###"],
    [b".#.", b"##.", b".#.", b".#.", b"###"],
    [b"###", b"..#", b"###", b"#..", b"###"],
    [b"###", b"..#", b"###", b"..#", b"###"],
    [b"#.#", b"#.#", b"###", b"..#", b"..#"],
    [b"###", b"#..", b"###", b"..#", b"###"],
    [b"###", b"#..", b"###", b"#.#", b"###"],
    [b"###", b"..#", b".#.", b".#.", b".#."],
    [b"###", b"#.#", b"###", b"#.#", b"###"],
    [b"###", b"#.#", b"###", b"..#", b"###"],
];

/// The glyph of `digit` as strokes between the centres of its cells (in cell units): right and
/// down neighbours are joined, and diagonal neighbours where no orthogonal path joins them.
fn glyph_strokes(digit: usize) -> Vec<((f32, f32), (f32, f32))> {
    let on = |c: isize, r: isize| {
        (0..3).contains(&c) && (0..5).contains(&r) && GLYPHS[digit][r as usize][c as usize] == b'#'
    };
    let mut strokes = Vec::with_capacity(16);
    for r in 0..5isize {
        for c in 0..3isize {
            if !on(c, r) {
                continue;
            }
            let here = (c as f32, r as f32);
            let mut joined = false;
            for (dc, dr) in [(1, 0), (0, 1), (1, 1), (-1, 1)] {
                let diagonal = dc != 0 && dr != 0;
                if on(c + dc, r + dr) && !(diagonal && (on(c + dc, r) || on(c, r + dr))) {
                    strokes.push((here, ((c + dc) as f32, (r + dr) as f32)));
                    joined = true;
                }
            }
            let has_neighbour = [(-1, 0), (0, -1), (-1, -1), (1, -1)]
                .iter()
                .any(|&(dc, dr)| on(c + dc, r + dr));
            if !joined && !has_neighbour {
                strokes.push((here, here));
            }
        }
    }
    strokes
}

/// Digit `digit`: the 3x5 glyph scaled 2x (6x10 pixels), translated up to 3 pixels each way from
/// the centre, with stroke width 1.1 to 2.4 pixels.
fn draw_digit(canvas: &mut Canvas, digit: usize, rng: &mut Rng) {
    let x0 = 5.0 + uniform(rng, -3.0, 3.0);
    let y0 = 3.0 + uniform(rng, -3.0, 3.0);
    let half_width = uniform(rng, 0.55, 1.2);
    let value = uniform(rng, 0.6, 1.0);
    let to_pixels = |(c, r): (f32, f32)| (x0 + 2.0 * c + 1.0, y0 + 2.0 * r + 1.0);
    let strokes: Vec<_> = glyph_strokes(digit)
        .into_iter()
        .map(|(a, b)| (to_pixels(a), to_pixels(b)))
        .collect();
    canvas.fill_sdf(value, |x, y| {
        strokes
            .iter()
            .map(|&(a, b)| dist2_segment(x, y, a, b))
            .fold(f32::INFINITY, f32::min)
            .sqrt()
            - half_width
    });
}

/// Circle, square, triangle, cross or ring of extent (radius) 3 to 6 pixels, placed at random
/// wholly inside the image.
fn draw_shape(canvas: &mut Canvas, shape: usize, rng: &mut Rng) {
    let r = uniform(rng, 3.0, 6.0);
    let cx = uniform(rng, r + 0.5, IMAGE_SIZE as f32 - 0.5 - r);
    let cy = uniform(rng, r + 0.5, IMAGE_SIZE as f32 - 0.5 - r);
    let value = uniform(rng, 0.6, 1.0);
    match shape {
        0 => canvas.fill_disc(cx, cy, r, value),
        1 => canvas.fill_rect(cx, cy, 0.85 * r, 0.85 * r, value),
        2 => {
            let (top, bottom) = (cy - r, cy + 0.8 * r);
            canvas.fill_polygon(&[(cx, top), (cx + r, bottom), (cx - r, bottom)], value);
        }
        3 => {
            let arm = (0.3 * r).max(0.75);
            canvas.fill_rect(cx, cy, r, arm, value);
            canvas.fill_rect(cx, cy, arm, r, value);
        }
        _ => canvas.fill_ring(cx, cy, r, uniform(rng, 0.65, 0.95), value),
    }
}

/// A bar at angle `class * 22.5` degrees (counter-clockwise from horizontal, jittered by up to
/// 3.75 degrees) of random length, width and position; or, one time in four, a grating whose
/// stripes run at that angle.
fn draw_orientation(canvas: &mut Canvas, class: usize, rng: &mut Rng) {
    let angle = class as f32 * PI / 8.0 + uniform(rng, -PI / 48.0, PI / 48.0);
    // Image rows grow downwards, so counter-clockwise is (cos, -sin).
    let (dx, dy) = (angle.cos(), -angle.sin());
    let value = uniform(rng, 0.6, 1.0);
    if rng.random_range(0..4) == 0 {
        let period = uniform(rng, 3.5, 5.5);
        let phase = uniform(rng, 0.0, TAU);
        // Distance across the stripes: along the normal (-dy, dx).
        canvas.fill_with(|x, y| {
            value * (0.5 + 0.5 * ((x * -dy + y * dx) * TAU / period + phase).cos())
        });
    } else {
        let cx = uniform(rng, 6.0, 10.0);
        let cy = uniform(rng, 6.0, 10.0);
        let half_length = uniform(rng, 4.0, 6.5);
        let half_width = uniform(rng, 0.5, 1.0);
        let a = (cx - half_length * dx, cy - half_length * dy);
        let b = (cx + half_length * dx, cy + half_length * dy);
        canvas.line(a, b, half_width, value);
    }
}

/// `count` dots of radius 0.9 to 1.4 pixels, at least 1.5 pixels apart edge to edge.
fn draw_dots(canvas: &mut Canvas, count: usize, rng: &mut Rng) {
    let mut dots = [(0.0f32, 0.0f32, 0.0f32); 6];
    let mut placed = 0;
    let mut tries = 0;
    while placed < count {
        if tries == 100 {
            // A crowded layout: start again (rare; the sizes leave plenty of room for 6).
            placed = 0;
            tries = 0;
        }
        tries += 1;
        let r = uniform(rng, 0.9, 1.4);
        let x = uniform(rng, r + 0.5, IMAGE_SIZE as f32 - 0.5 - r);
        let y = uniform(rng, r + 0.5, IMAGE_SIZE as f32 - 0.5 - r);
        if dots[..placed]
            .iter()
            .all(|&(a, b, s)| norm(x - a, y - b) >= r + s + 1.5)
        {
            dots[placed] = (x, y, r);
            placed += 1;
            tries = 0;
        }
    }
    for &(x, y, r) in &dots[..count] {
        canvas.fill_disc(x, y, r, uniform(rng, 0.65, 1.0));
    }
}

/// A Gaussian blob in grid cell `cell` of 3x3 (row-major), up to 1.2 pixels from the cell's
/// centre.
fn draw_position(canvas: &mut Canvas, cell: usize, rng: &mut Rng) {
    let width = IMAGE_SIZE as f32 / 3.0;
    let cx = ((cell % 3) as f32 + 0.5) * width + uniform(rng, -1.2, 1.2);
    let cy = ((cell / 3) as f32 + 0.5) * width + uniform(rng, -1.2, 1.2);
    let sigma = uniform(rng, 0.9, 1.4);
    canvas.blob(cx, cy, sigma, uniform(rng, 0.7, 1.0));
}

/// A texture filling the image, of random phase and period: stripes (horizontal, vertical, on
/// either diagonal), checkerboard, a dot lattice, or independent pixel noise.
fn draw_texture(canvas: &mut Canvas, texture: usize, rng: &mut Rng) {
    let value = uniform(rng, 0.6, 1.0);
    let wave = |t: f32, period: f32, phase: f32| 0.5 + 0.5 * (t * TAU / period + phase).cos();
    match texture {
        0..=2 => {
            let period = uniform(rng, 3.0, 6.0);
            let phase = uniform(rng, 0.0, TAU);
            let sign = if coin(rng) { 1.0 } else { -1.0 };
            canvas.fill_with(|x, y| {
                let t = match texture {
                    0 => y,
                    1 => x,
                    _ => (x + sign * y) * FRAC_1_SQRT_2,
                };
                value * wave(t, period, phase)
            });
        }
        3 => {
            let cell = (2 + rng.random_range(0..3)) as f32;
            let (ox, oy) = (uniform(rng, 0.0, 2.0 * cell), uniform(rng, 0.0, 2.0 * cell));
            canvas.fill_with(|x, y| {
                let parity = ((x + ox) / cell).floor() + ((y + oy) / cell).floor();
                value * parity.rem_euclid(2.0)
            });
        }
        4 => {
            let spacing = uniform(rng, 4.0, 5.5);
            let r = uniform(rng, 0.8, 1.3);
            let (ox, oy) = (uniform(rng, 0.0, spacing), uniform(rng, 0.0, spacing));
            let nearest = move |t: f32| (t - spacing * (t / spacing).round()).abs();
            canvas.fill_sdf(value, |x, y| norm(nearest(x - ox), nearest(y - oy)) - r);
        }
        _ => {
            for p in &mut canvas.px {
                *p = value * rng.random::<f32>();
            }
        }
    }
}

/// A filled square or circle (at random) whose area is that of a disc of radius 1.3-1.9 (small),
/// 2.6-3.2 (medium), 3.9-4.5 (large) or 5.2-6.0 (huge) pixels, placed wholly inside the image.
fn draw_size(canvas: &mut Canvas, size: usize, rng: &mut Rng) {
    const RADII: [(f32, f32); 4] = [(1.3, 1.9), (2.6, 3.2), (3.9, 4.5), (5.2, 6.0)];
    let (lo, hi) = RADII[size];
    let r = uniform(rng, lo, hi);
    let cx = uniform(rng, r + 0.5, IMAGE_SIZE as f32 - 0.5 - r);
    let cy = uniform(rng, r + 0.5, IMAGE_SIZE as f32 - 0.5 - r);
    let value = uniform(rng, 0.6, 1.0);
    if coin(rng) {
        canvas.fill_disc(cx, cy, r, value);
    } else {
        // The same area as the disc: half side r * sqrt(pi) / 2.
        let half = r * PI.sqrt() / 2.0;
        canvas.fill_rect(cx, cy, half, half, value);
    }
}

/// A random pattern of 2x2-pixel blocks (8x8 of them, 30-50% lit) mirrored left-right (class 0),
/// top-bottom (1), both ways (2) or not at all (3).
fn draw_symmetry(canvas: &mut Canvas, symmetry: usize, rng: &mut Rng) {
    const CELLS: usize = IMAGE_SIZE / 2;
    let density = uniform(rng, 0.3, 0.5);
    let mut cells = [[0.0f32; CELLS]; CELLS];
    for row in &mut cells {
        for cell in row.iter_mut() {
            if rng.random::<f32>() < density {
                *cell = uniform(rng, 0.5, 1.0);
            }
        }
    }
    let (left_right, top_bottom) = match symmetry {
        0 => (true, false),
        1 => (false, true),
        2 => (true, true),
        _ => (false, false),
    };
    if left_right {
        for row in &mut cells {
            for c in 0..CELLS / 2 {
                row[CELLS - 1 - c] = row[c];
            }
        }
    }
    if top_bottom {
        for r in 0..CELLS / 2 {
            cells[CELLS - 1 - r] = cells[r];
        }
    }
    for (i, p) in canvas.px.iter_mut().enumerate() {
        *p = cells[i / IMAGE_SIZE / 2][i % IMAGE_SIZE / 2];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(d: &Dataset) -> Vec<u32> {
        d.images.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn names_and_classes_are_consistent() {
        let expected = [10, 5, 8, 6, 9, 6, 4, 4];
        for (i, task) in Task::ALL.into_iter().enumerate() {
            assert_eq!(task.index(), i);
            assert_eq!(Task::from_name(task.name()), Some(task));
            assert_eq!(task.num_classes(), expected[i], "{task}");
            let mut names = task.classes().to_vec();
            names.sort_unstable();
            names.dedup();
            assert_eq!(
                names.len(),
                task.num_classes(),
                "{task}: duplicate class names"
            );
        }
        assert_eq!(Task::from_name("mnist"), None);
    }

    #[test]
    fn same_arguments_give_identical_datasets() {
        for task in Task::ALL {
            let a = generate(task, Split::Train, 50, 7);
            let b = generate(task, Split::Train, 50, 7);
            assert_eq!(bits(&a), bits(&b), "{task}");
            assert_eq!(a.labels, b.labels, "{task}");
        }
        let a = pretrain_dataset(Split::Validation, 40, 3);
        let b = pretrain_dataset(Split::Validation, 40, 3);
        assert_eq!(bits(&a), bits(&b));
        assert_eq!(a.labels, b.labels);
    }

    #[test]
    fn splits_and_seeds_give_different_images() {
        for task in Task::ALL {
            let sets = [
                generate(task, Split::Train, 20, 1),
                generate(task, Split::Validation, 20, 1),
                generate(task, Split::Test, 20, 1),
                generate(task, Split::Train, 20, 2),
            ];
            for (i, a) in sets.iter().enumerate() {
                for b in &sets[i + 1..] {
                    // No image of one set reappears in another.
                    for k in 0..a.len() {
                        for l in 0..b.len() {
                            assert_ne!(a.image(k), b.image(l), "{task}");
                        }
                    }
                }
            }
        }
        let p = pretrain_dataset(Split::Train, 20, 1);
        assert_ne!(bits(&p), bits(&pretrain_dataset(Split::Test, 20, 1)));
    }

    #[test]
    fn labels_are_balanced_and_shuffled() {
        for task in Task::ALL {
            let n = 103;
            let d = generate(task, Split::Test, n, 5);
            assert_eq!(d.len(), n);
            assert_eq!(d.images.len(), n * IMAGE_PIXELS);
            assert_eq!(d.classes, task.num_classes());
            let mut counts = vec![0usize; d.classes];
            for &l in &d.labels {
                counts[l as usize] += 1;
            }
            let base = n / d.classes;
            assert!(
                counts.iter().all(|&c| c == base || c == base + 1),
                "{task}: {counts:?}"
            );
            let in_order = d
                .labels
                .iter()
                .enumerate()
                .all(|(i, &l)| l as usize == i % d.classes);
            assert!(!in_order, "{task}: labels not shuffled");
        }
        let empty = generate(Task::Digits, Split::Train, 0, 0);
        assert!(empty.is_empty());
    }

    #[test]
    fn pixels_lie_in_the_unit_interval_on_a_dark_background() {
        for task in Task::ALL {
            let d = generate(task, Split::Train, 200, 11);
            assert!(d.images.iter().all(|x| (0.0..=1.0).contains(x)), "{task}");
            for i in 0..d.len() {
                let image = d.image(i);
                let max = image.iter().copied().fold(0.0, f32::max);
                let min = image.iter().copied().fold(1.0, f32::min);
                assert!(
                    max - min > 0.25 && min < 0.25,
                    "{task} image {i}: {min}..{max}"
                );
            }
            if task != Task::Texture {
                let mean = d.images.iter().sum::<f32>() / d.images.len() as f32;
                assert!(mean < 0.45, "{task}: mean pixel {mean}");
            }
        }
    }

    /// Features for the distinguishability check: the pixels, the image's autocorrelation at a
    /// few offsets (orientation, period, texture), and how far it is from its mirror images.
    fn features(image: &[f32]) -> Vec<f32> {
        let n = IMAGE_SIZE as isize;
        let at = |x: isize, y: isize| image[(y * n + x) as usize];
        let mean = image.iter().sum::<f32>() / IMAGE_PIXELS as f32;
        let mut f = image.to_vec();
        f.push(mean * 8.0);
        for (dx, dy) in [
            (1, 0),
            (2, 0),
            (3, 0),
            (0, 1),
            (0, 2),
            (0, 3),
            (1, 1),
            (2, 2),
            (1, -1),
            (2, -2),
            (2, 1),
            (1, 2),
            (2, -1),
            (1, -2),
        ] {
            let mut sum = 0.0;
            let mut count = 0.0;
            for y in 0.max(-dy)..n.min(n - dy) {
                for x in 0..n - dx {
                    sum += (at(x, y) - mean) * (at(x + dx, y + dy) - mean);
                    count += 1.0;
                }
            }
            f.push(sum / count * 8.0);
        }
        let mirror = |flip: &dyn Fn(isize, isize) -> f32| {
            (0..n)
                .flat_map(|y| (0..n).map(move |x| (x, y)))
                .map(|(x, y)| (at(x, y) - flip(x, y)).abs())
                .sum::<f32>()
                / IMAGE_PIXELS as f32
                * 8.0
        };
        f.push(mirror(&|x, y| at(n - 1 - x, y)));
        f.push(mirror(&|x, y| at(x, n - 1 - y)));
        f
    }

    /// Per-class mean and variance of the features.
    fn class_moments(d: &Dataset) -> (Vec<Vec<f64>>, Vec<Vec<f64>>, Vec<f64>) {
        let dim = features(d.image(0)).len();
        let mut sums = vec![vec![0.0f64; dim]; d.classes];
        let mut squares = vec![vec![0.0f64; dim]; d.classes];
        let mut counts = vec![0.0f64; d.classes];
        for i in 0..d.len() {
            let l = d.labels[i] as usize;
            counts[l] += 1.0;
            for (j, &x) in features(d.image(i)).iter().enumerate() {
                sums[l][j] += f64::from(x);
                squares[l][j] += f64::from(x) * f64::from(x);
            }
        }
        for l in 0..d.classes {
            for j in 0..dim {
                sums[l][j] /= counts[l];
                squares[l][j] = squares[l][j] / counts[l] - sums[l][j] * sums[l][j];
            }
        }
        (sums, squares, counts)
    }

    /// Every pair of classes of every task has different mean features (mean image,
    /// autocorrelation, mirror asymmetry): the squared distance of the class means, each feature
    /// in units of its standard error, exceeds what equal means would give (chi-squared with one
    /// degree of freedom per feature) by many standard deviations. The generators are not
    /// degenerate copies of one class.
    #[test]
    fn every_pair_of_classes_has_a_distinct_mean() {
        for task in Task::ALL {
            let k = task.num_classes();
            let d = generate(task, Split::Train, 400 * k, 3);
            let (means, variances, counts) = class_moments(&d);
            let dim = means[0].len() as f64;
            let mut worst = (f64::INFINITY, 0, 0);
            for a in 0..k {
                for b in a + 1..k {
                    let t: f64 = (0..means[a].len())
                        .map(|j| {
                            let se2 = variances[a][j] / counts[a] + variances[b][j] / counts[b];
                            (means[a][j] - means[b][j]).powi(2) / (se2 + 1e-9)
                        })
                        .sum();
                    let z = (t - dim) / (2.0 * dim).sqrt();
                    if z < worst.0 {
                        worst = (z, a, b);
                    }
                }
            }
            let (z, a, b) = worst;
            let names = task.classes();
            eprintln!(
                "{task}: closest pair {} vs {}: z = {z:.1}",
                names[a], names[b]
            );
            assert!(
                z > 8.0,
                "{task}: the mean features of {} and {} differ by only z = {z:.1}",
                names[a],
                names[b]
            );
        }
    }

    #[test]
    fn pretraining_covers_all_eight_generators_in_one_label_space() {
        let d = pretrain_dataset(Split::Train, 160, 9);
        assert_eq!(d.classes, 52);
        // Labels 0-9 are digits, 10-14 shapes, ..., 48-51 symmetry: 20 images per task.
        let bounds = [0, 10, 15, 23, 29, 38, 44, 48, 52];
        let mut counts = [0usize; 8];
        for &l in &d.labels {
            counts[bounds.iter().rposition(|&b| b <= l as usize).unwrap()] += 1;
        }
        assert_eq!(counts, [20; 8]);
        assert!(d.images.iter().all(|x| (0.0..=1.0).contains(x)));
        // Not the tasks' own images.
        let digits = generate(Task::Digits, Split::Train, 160, 9);
        assert!((0..d.len()).all(|i| (0..digits.len()).all(|j| d.image(i) != digits.image(j))));
    }

    #[test]
    fn digit_glyphs_become_connected_strokes() {
        // One stroke per joined pair of cells; "7" needs its diagonal.
        assert_eq!(glyph_strokes(1).len(), 7);
        assert!(glyph_strokes(7).contains(&((2.0, 1.0), (1.0, 2.0))));
        assert!(
            !glyph_strokes(0)
                .iter()
                .any(|(a, b)| a.0 != b.0 && a.1 != b.1)
        );
    }
}
