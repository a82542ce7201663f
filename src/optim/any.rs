//! One serializable type for every optimizer, and construction by name, so a run configuration
//! can say `optimizer = "cmaes"` and a resumed run can restore whichever optimizer it had.

use serde::{Deserialize, Serialize};

use super::{
    Cmaes, CmaesOptions, GaussianProcessBo, GpOptions, Grid, LatinHypercube, Map, MapOptions,
    MapVariant, Nsga2, Nsga2Options, OptimError, Optimizer, RandomSearch, Sobol, Told,
    check_dim_batch,
};

/// The names [`by_name`] accepts.
pub const NAMES: [&str; 10] = [
    "random",
    "sobol",
    "lhs",
    "grid",
    "cmaes",
    "nsga2",
    "map",
    "map-bayes",
    "gp",
    "gp-parego",
];

/// The number of levels per coordinate of the grid [`by_name`] builds.
pub const GRID_LEVELS: usize = 5;

/// Any optimizer of this module, serialized with its kind as a tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum AnyOptimizer {
    /// [`RandomSearch`].
    Random(RandomSearch),
    /// [`Sobol`].
    Sobol(Sobol),
    /// [`LatinHypercube`].
    Lhs(LatinHypercube),
    /// [`Grid`].
    Grid(Grid),
    /// [`Cmaes`] (boxed: it is much larger than the others).
    Cmaes(Box<Cmaes>),
    /// [`Nsga2`].
    Nsga2(Box<Nsga2>),
    /// [`Map`], either variant.
    Map(Box<Map>),
    /// [`GaussianProcessBo`], on the scalar score or (ParEGO) on the objectives.
    Gp(Box<GaussianProcessBo>),
}

impl AnyOptimizer {
    /// The name [`by_name`] knows this optimizer by.
    pub fn name(&self) -> &'static str {
        match self {
            AnyOptimizer::Random(_) => "random",
            AnyOptimizer::Sobol(_) => "sobol",
            AnyOptimizer::Lhs(_) => "lhs",
            AnyOptimizer::Grid(_) => "grid",
            AnyOptimizer::Cmaes(_) => "cmaes",
            AnyOptimizer::Nsga2(_) => "nsga2",
            AnyOptimizer::Map(map) => match map.options().variant {
                MapVariant::Plain => "map",
                MapVariant::Bayes => "map-bayes",
            },
            AnyOptimizer::Gp(gp) if gp.options().multi_objective => "gp-parego",
            AnyOptimizer::Gp(_) => "gp",
        }
    }

    /// The same optimizer starting from `point` where it has a place for a known good point:
    /// the first population of NSGA-II, the initial design of MAP and GP-BO. (CMA-ES takes its
    /// mean at construction; the designs and random search have none.)
    pub fn with_initial_point(self, point: Vec<f64>) -> AnyOptimizer {
        match self {
            AnyOptimizer::Nsga2(o) => {
                AnyOptimizer::Nsga2(Box::new(o.with_initial_points(vec![point])))
            }
            AnyOptimizer::Map(o) => AnyOptimizer::Map(Box::new(o.with_initial_points(vec![point]))),
            AnyOptimizer::Gp(o) => AnyOptimizer::Gp(Box::new(o.with_initial_points(vec![point]))),
            other => other,
        }
    }

    fn inner_ref(&self) -> &dyn Optimizer {
        match self {
            AnyOptimizer::Random(o) => o,
            AnyOptimizer::Sobol(o) => o,
            AnyOptimizer::Lhs(o) => o,
            AnyOptimizer::Grid(o) => o,
            AnyOptimizer::Cmaes(o) => o.as_ref(),
            AnyOptimizer::Nsga2(o) => o.as_ref(),
            AnyOptimizer::Map(o) => o.as_ref(),
            AnyOptimizer::Gp(o) => o.as_ref(),
        }
    }

    fn inner(&mut self) -> &mut dyn Optimizer {
        match self {
            AnyOptimizer::Random(o) => o,
            AnyOptimizer::Sobol(o) => o,
            AnyOptimizer::Lhs(o) => o,
            AnyOptimizer::Grid(o) => o,
            AnyOptimizer::Cmaes(o) => o.as_mut(),
            AnyOptimizer::Nsga2(o) => o.as_mut(),
            AnyOptimizer::Map(o) => o.as_mut(),
            AnyOptimizer::Gp(o) => o.as_mut(),
        }
    }
}

impl Optimizer for AnyOptimizer {
    fn ask(&mut self) -> Vec<Vec<f64>> {
        self.inner().ask()
    }

    fn tell(&mut self, results: &[Told]) {
        self.inner().tell(results)
    }

    fn predict(&self, point: &[f64]) -> Option<Vec<f64>> {
        self.inner_ref().predict(point)
    }
}

/// The optimizer called `name` (one of [`NAMES`]) over `dim` coordinates, with default settings,
/// its randomness drawn from `seed`.
///
/// `batch` is the number of points per ask for the designs and random search. The grid has
/// [`GRID_LEVELS`] levels per coordinate (`0, 0.25, 0.5, 0.75, 1`), so `5^dim` points: beyond
/// 27 dimensions it does not fit a `u64` and is refused (it could never finish anyway). Sobol
/// covers at most [`Sobol::MAX_DIM`] dimensions. CMA-ES asks a whole
/// generation at a time: its population is the default `4 + ⌊3 ln dim⌋` or `batch`, whichever
/// is larger, so a wide batch keeps every worker busy.
pub fn by_name(
    name: &str,
    dim: usize,
    batch: usize,
    seed: u64,
) -> Result<AnyOptimizer, OptimError> {
    check_dim_batch(dim, batch)?;
    Ok(match name {
        "random" => AnyOptimizer::Random(RandomSearch::new(dim, batch, seed)?),
        "sobol" => AnyOptimizer::Sobol(Sobol::new(dim, batch, seed)?),
        "lhs" => AnyOptimizer::Lhs(LatinHypercube::new(dim, batch, seed)?),
        "grid" => AnyOptimizer::Grid(Grid::uniform(dim, GRID_LEVELS, batch)?),
        "cmaes" => {
            let default_popsize = 4 + (3.0 * (dim as f64).ln()).floor() as usize;
            let options = CmaesOptions {
                seed,
                popsize: Some(default_popsize.max(batch)),
                ..CmaesOptions::default()
            };
            AnyOptimizer::Cmaes(Box::new(Cmaes::new(dim, options)?))
        }
        "nsga2" => AnyOptimizer::Nsga2(Box::new(Nsga2::new(
            dim,
            batch,
            seed,
            Nsga2Options::default(),
        )?)),
        "map" => AnyOptimizer::Map(Box::new(Map::new(dim, batch, seed, MapOptions::default())?)),
        "gp" | "gp-parego" => AnyOptimizer::Gp(Box::new(GaussianProcessBo::new(
            dim,
            batch,
            seed,
            GpOptions {
                multi_objective: name == "gp-parego",
                ..GpOptions::default()
            },
        )?)),
        "map-bayes" => {
            AnyOptimizer::Map(Box::new(Map::new(dim, batch, seed, MapOptions::bayes())?))
        }
        _ => {
            return Err(OptimError::Unknown {
                name: name.to_string(),
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_builds_its_optimizer_and_survives_json() {
        for name in NAMES {
            let mut optimizer = by_name(name, 3, 8, 1).unwrap();
            assert_eq!(optimizer.name(), name);
            let points = optimizer.ask();
            assert!(!points.is_empty(), "{name}");
            assert!(points.iter().all(|p| p.len() == 3));
            assert!(
                points.iter().flatten().all(|x| (0.0..=1.0).contains(x)),
                "{name}"
            );
            let results: Vec<Told> = points
                .iter()
                .map(|p| Told::scalar(p.clone(), Some(p.iter().sum())))
                .collect();
            optimizer.tell(&results);
            let json = serde_json::to_string(&optimizer).unwrap();
            // Variants of one optimizer (map-bayes, gp-parego) share its kind tag.
            let kind = name.split('-').next().unwrap();
            assert!(
                json.starts_with(&format!("{{\"kind\":\"{kind}\"")),
                "{json}"
            );
            let mut back: AnyOptimizer = serde_json::from_str(&json).unwrap();
            assert_eq!(back, optimizer);
            assert_eq!(back.name(), name);
            assert_eq!(back.ask(), optimizer.ask(), "{name}");
        }
    }

    #[test]
    fn model_based_optimizers_ask_the_initial_point_first() {
        let point = vec![0.15, 0.9, 0.4];
        for name in ["nsga2", "map", "map-bayes", "gp", "gp-parego"] {
            let plain = by_name(name, 3, 4, 2).unwrap().ask();
            let mut seeded = by_name(name, 3, 4, 2)
                .unwrap()
                .with_initial_point(point.clone());
            let asked = seeded.ask();
            assert_eq!(asked[0], point, "{name}");
            assert_eq!(asked.len(), plain.len(), "{name}");
            assert!(!plain.contains(&point), "{name}");
        }
        let mut random = by_name("random", 3, 4, 2).unwrap();
        let unchanged = by_name("random", 3, 4, 2)
            .unwrap()
            .with_initial_point(point)
            .ask();
        assert_eq!(
            random.ask(),
            unchanged,
            "random search has no initial design"
        );
    }

    #[test]
    fn cmaes_uses_the_batch_as_population_when_it_is_larger() {
        let popsize = |batch| by_name("cmaes", 10, batch, 0).unwrap().ask().len();
        assert_eq!(popsize(1), 10);
        assert_eq!(popsize(32), 32);
        assert_eq!(by_name("grid", 2, 100, 0).unwrap().ask().len(), 25);
    }

    #[test]
    fn unknown_names_and_bad_shapes_are_explained() {
        let err = by_name("bayes", 3, 8, 1).unwrap_err().to_string();
        for expected in NAMES {
            assert!(err.contains(expected), "{err}");
        }
        assert!(err.contains("\"bayes\""), "{err}");
        assert!(
            by_name("cmaes", 0, 8, 1)
                .unwrap_err()
                .to_string()
                .contains("`dim`")
        );
        assert!(
            by_name("sobol", 2, 0, 1)
                .unwrap_err()
                .to_string()
                .contains("`batch`")
        );
    }
}
