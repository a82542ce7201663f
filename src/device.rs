//! Choosing the compute device at run time: `cpu` (burn's Flex backend) or `cuda:N` (burn's CUDA
//! backend, in builds with the `cuda` feature). Everything runs on burn's `Dispatch` backend, so
//! one build serves both and the choice is a flag.

use std::fmt;
use std::str::FromStr;

use burn::{Dispatch, DispatchDevice};

/// The backend every command runs on; the device picks the concrete backend.
pub type Backend = Dispatch;

/// A device as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// The CPU (burn's Flex backend).
    #[default]
    Cpu,
    /// CUDA GPU number N.
    Cuda(usize),
}

/// A device that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// Not `cpu`, `cuda` or `cuda:N`.
    #[error("unknown device {0:?} (expected \"cpu\", \"cuda\" or \"cuda:N\")")]
    Unknown(String),
    /// This binary was built without CUDA.
    #[error(
        "device cuda:{0} asked for, but this mergesearch was built without CUDA support; rebuild with `cargo build --release --features cuda`"
    )]
    NotCompiled(usize),
    /// CUDA is compiled in but the device does not work here.
    #[error(
        "device cuda:{index} is not usable: {reason} (is an NVIDIA driver installed and the GPU visible?)"
    )]
    Unavailable {
        /// The GPU index.
        index: usize,
        /// What failed.
        reason: String,
    },
}

impl FromStr for DeviceSpec {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(|| DeviceError::Unknown(s.to_string())),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl DeviceSpec {
    /// Opens the device, checking that a GPU actually answers before any work is queued on it.
    pub fn open(self) -> Result<DispatchDevice, DeviceError> {
        match self {
            DeviceSpec::Cpu => Ok(DispatchDevice::Flex(burn::backend::flex::FlexDevice)),
            DeviceSpec::Cuda(index) => open_cuda(index),
        }
    }
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(index: usize) -> Result<DispatchDevice, DeviceError> {
    Err(DeviceError::NotCompiled(index))
}

#[cfg(feature = "cuda")]
fn open_cuda(index: usize) -> Result<DispatchDevice, DeviceError> {
    use burn::backend::cuda::CudaDevice;
    use burn::tensor::Tensor;

    let device = DispatchDevice::Cuda(CudaDevice::new(index));
    // burn's CUDA runtime panics when the driver or the GPU is missing; turn that into an error.
    let probe = device.clone();
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = std::panic::catch_unwind(move || {
        Tensor::<Backend, 1>::from_floats([1.0f32], &probe)
            .into_data()
            .to_vec::<f32>()
            .map(|v| v.first().copied() == Some(1.0))
    });
    std::panic::set_hook(previous_hook);
    match outcome {
        Ok(Ok(true)) => Ok(device),
        Ok(_) => Err(DeviceError::Unavailable {
            index,
            reason: "a test tensor did not round-trip".into(),
        }),
        Err(panic) => {
            let reason = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the CUDA runtime failed to start".into());
            Err(DeviceError::Unavailable { index, reason })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("cuda:1".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(1));
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert!(matches!(
            "tpu".parse::<DeviceSpec>(),
            Err(DeviceError::Unknown(_))
        ));
        assert!(DeviceSpec::Cpu.open().is_ok());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_is_a_clear_error() {
        let err = DeviceSpec::Cuda(0).open().unwrap_err().to_string();
        assert!(err.contains("--features cuda"), "{err}");
    }
}
