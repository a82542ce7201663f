//! Exact hypervolume for any number of objectives by WFG (While, Bradstreet and Barone 2012),
//! because no sweep stays O(n log n) beyond 3 objectives.
//!
//! With the points sorted by the last objective ascending, the union of their boxes splits into
//! one slab per point `p`: the part of `p`'s box no later point covers. Every later point
//! reaches at least as high in the last objective, so that part is `p`'s exclusive hypervolume
//! in the other `d - 1` objectives times `p`'s last value. The exclusive hypervolume is the
//! volume of `p`'s (d−1)-box minus that of the *limit set*: the later points each clipped to
//! `p`'s box (component-wise minimum). The limit set's volume recurses in `d - 1` objectives,
//! after dropping its dominated points, which is what keeps WFG fast in practice; at 3
//! objectives the O(n log n) sweep takes over.
//!
//! Cost: `n` limit sets per level, each pruned in O(d n²), and the dimension falls by one per
//! level, so the worst case is O(n^(d−2) log n) for `d ≥ 4` (O(n² log n) at `d = 4`: there the
//! limit sets go to the 3-D sweep unpruned); typical fronts cost far less.

use super::hypervolume::union_volume;

/// The union volume of the boxes `[0, p]` for the points of `coords` (`dim ≥ 2` coordinates
/// each, all positive and finite), sliced on the last objective; the limit sets' volumes come
/// from [`union_volume`] in `dim - 1` objectives.
pub(super) fn wfg(coords: &[f64], dim: usize) -> f64 {
    let last = dim - 1;
    let mut points: Vec<&[f64]> = coords.chunks_exact(dim).collect();
    points.sort_unstable_by(|a, b| a[last].total_cmp(&b[last]));
    let mut limit = Vec::new();
    let mut total = 0.0;
    for (i, p) in points.iter().enumerate() {
        let base = &p[..last];
        limit.clear();
        for q in &points[i + 1..] {
            limit.extend(q[..last].iter().zip(base).map(|(&a, &b)| a.min(b)));
        }
        let inclusive: f64 = base.iter().product();
        let exclusive = (inclusive - union_volume(&limit, last)).max(0.0);
        total += p[last] * exclusive;
    }
    total
}

/// The points of `coords` (`dim` coordinates each) that no other point weakly dominates, one
/// copy of each, flattened the same way.
///
/// Points are visited by the sum of their coordinates, then lexicographically, both
/// descending: a point's dominators come before it, so one pass against the points kept so far
/// suffices.
pub(super) fn non_dominated(coords: &[f64], dim: usize) -> Vec<f64> {
    let mut points: Vec<(f64, &[f64])> = coords
        .chunks_exact(dim)
        .map(|p| (p.iter().sum(), p))
        .collect();
    points.sort_unstable_by(|a, b| {
        b.0.total_cmp(&a.0).then_with(|| {
            b.1.iter()
                .zip(a.1)
                .map(|(x, y)| x.total_cmp(y))
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        })
    });
    let mut kept: Vec<f64> = Vec::with_capacity(coords.len());
    for (_, p) in points {
        let covered = kept
            .chunks_exact(dim)
            .any(|k| k.iter().zip(p).all(|(a, b)| a >= b));
        if !covered {
            kept.extend_from_slice(p);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_dominated_drops_dominated_and_duplicates() {
        let coords = [
            1.0, 1.0, 1.0, 1.0, //
            2.0, 1.0, 1.0, 1.0, //
            1.0, 1.0, 1.0, 1.0, //
            1.0, 2.0, 1.0, 1.0, //
            2.0, 1.0, 1.0, 1.0, //
        ];
        let kept = non_dominated(&coords, 4);
        assert_eq!(kept, vec![2.0, 1.0, 1.0, 1.0, 1.0, 2.0, 1.0, 1.0]);
    }
}
