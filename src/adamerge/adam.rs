//! Adam (Kingma & Ba) on a flat vector of coefficients, in f64 on the host, with optional box
//! bounds applied after each step (AdaMerging clamps its coefficients to `[0, 1]`).

/// Adam's state for `n` coefficients.
#[derive(Debug, Clone, PartialEq)]
pub struct Adam {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    m: Vec<f64>,
    v: Vec<f64>,
    steps: i32,
}

impl Adam {
    /// Adam with learning rate `lr` and the usual `beta1 = 0.9, beta2 = 0.999, eps = 1e-8`.
    pub fn new(n: usize, lr: f64) -> Adam {
        Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            m: vec![0.0; n],
            v: vec![0.0; n],
            steps: 0,
        }
    }

    /// One descent step on `x` along `grad`, then `x` clamped into `[low, high]`.
    pub fn step(&mut self, x: &mut [f64], grad: &[f64], low: f64, high: f64) {
        self.steps += 1;
        let c1 = 1.0 - self.beta1.powi(self.steps);
        let c2 = 1.0 - self.beta2.powi(self.steps);
        for (((x, &g), m), v) in x.iter_mut().zip(grad).zip(&mut self.m).zip(&mut self.v) {
            *m = self.beta1 * *m + (1.0 - self.beta1) * g;
            *v = self.beta2 * *v + (1.0 - self.beta2) * g * g;
            let update = self.lr * (*m / c1) / ((*v / c2).sqrt() + self.eps);
            *x = (*x - update).clamp(low, high);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_step_moves_each_coordinate_by_the_learning_rate_against_its_gradient_sign() {
        let mut adam = Adam::new(3, 0.01);
        let mut x = vec![0.5, 0.5, 0.5];
        adam.step(&mut x, &[2.0, -0.001, 0.0], 0.0, 1.0);
        assert!((x[0] - 0.49).abs() < 1e-9, "{x:?}");
        assert!((x[1] - 0.51).abs() < 1e-6, "{x:?}");
        assert_eq!(x[2], 0.5);
    }

    #[test]
    fn it_minimizes_a_quadratic_and_respects_the_bounds() {
        let mut adam = Adam::new(2, 0.05);
        let mut x = vec![0.9, 0.1];
        // f = (x0 - 0.3)^2 + (x1 + 0.5)^2: the second minimum lies below the bound 0.
        for _ in 0..500 {
            let grad = [2.0 * (x[0] - 0.3), 2.0 * (x[1] + 0.5)];
            adam.step(&mut x, &grad, 0.0, 1.0);
        }
        assert!((x[0] - 0.3).abs() < 1e-2, "{x:?}");
        assert_eq!(x[1], 0.0);
    }
}
