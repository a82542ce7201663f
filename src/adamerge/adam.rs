//! Adam (Kingma & Ba) on a matrix of coefficients, on the device, with box bounds applied after
//! each step (AdaMerging clamps its coefficients to `[0, 1]`). Nothing is read back to the host.

use burn::prelude::*;

/// Adam's state for one coefficient matrix.
#[derive(Debug, Clone)]
pub struct Adam<B: Backend> {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    m: Tensor<B, 2>,
    v: Tensor<B, 2>,
    steps: i32,
}

impl<B: Backend> Adam<B> {
    /// Adam with learning rate `lr` and the usual `beta1 = 0.9, beta2 = 0.999, eps = 1e-8`, for
    /// coefficients of `shape`.
    pub fn new(shape: [usize; 2], lr: f64, device: &B::Device) -> Adam<B> {
        Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            m: Tensor::zeros(shape, device),
            v: Tensor::zeros(shape, device),
            steps: 0,
        }
    }

    /// One descent step from `x` along `grad`; returns the new `x` clamped into `[low, high]`.
    pub fn step(
        &mut self,
        x: Tensor<B, 2>,
        grad: Tensor<B, 2>,
        low: f64,
        high: f64,
    ) -> Tensor<B, 2> {
        self.steps += 1;
        let c1 = 1.0 - self.beta1.powi(self.steps);
        let c2 = 1.0 - self.beta2.powi(self.steps);
        self.m = self.m.clone().mul_scalar(self.beta1) + grad.clone().mul_scalar(1.0 - self.beta1);
        self.v = self.v.clone().mul_scalar(self.beta2)
            + (grad.clone() * grad).mul_scalar(1.0 - self.beta2);
        let update = self.m.clone().div_scalar(c1).mul_scalar(self.lr)
            / (self.v.clone().div_scalar(c2).sqrt().add_scalar(self.eps));
        (x - update).clamp(low, high)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    fn matrix(values: &[f64]) -> Tensor<Flex, 2> {
        let values: Vec<f32> = values.iter().map(|&v| v as f32).collect();
        let n = values.len();
        Tensor::from_data(TensorData::new(values, [1, n]), &Default::default())
    }

    fn host(t: &Tensor<Flex, 2>) -> Vec<f64> {
        t.clone().into_data().iter::<f64>().collect()
    }

    #[test]
    fn the_first_step_moves_each_coordinate_by_the_learning_rate_against_its_gradient_sign() {
        let mut adam = Adam::new([1, 3], 0.01, &Default::default());
        let x = adam.step(
            matrix(&[0.5, 0.5, 0.5]),
            matrix(&[2.0, -0.001, 0.0]),
            0.0,
            1.0,
        );
        let x = host(&x);
        assert!((x[0] - 0.49).abs() < 1e-6, "{x:?}");
        assert!((x[1] - 0.51).abs() < 1e-5, "{x:?}");
        assert_eq!(x[2], 0.5);
    }

    #[test]
    fn it_minimizes_a_quadratic_and_respects_the_bounds() {
        let mut adam = Adam::new([1, 2], 0.05, &Default::default());
        let mut x = matrix(&[0.9, 0.1]);
        // f = (x0 - 0.3)^2 + (x1 + 0.5)^2: the second minimum lies below the bound 0.
        for _ in 0..500 {
            let v = host(&x);
            let grad = matrix(&[2.0 * (v[0] - 0.3), 2.0 * (v[1] + 0.5)]);
            x = adam.step(x, grad, 0.0, 1.0);
        }
        let x = host(&x);
        assert!((x[0] - 0.3).abs() < 1e-2, "{x:?}");
        assert_eq!(x[1], 0.0);
    }
}
