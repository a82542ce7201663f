//! Choosing the compute device at run time: `cpu` (burn's Flex backend) or `cuda:N` (burn's CUDA
//! backend, in builds with the `cuda` feature). Library code is generic over the backend; the
//! command line opens a [`Device`] and [`with_backend!`](crate::with_backend) runs generic code
//! with the matching concrete backend, so one build serves both and the choice is a flag.

use std::fmt;
use std::str::FromStr;

use burn::backend::flex::FlexDevice;

/// An opened device, one variant per compiled-in backend.
#[derive(Debug, Clone)]
pub enum Device {
    /// The CPU, on burn's Flex backend.
    Cpu(FlexDevice),
    /// A CUDA GPU, on burn's CUDA backend.
    #[cfg(feature = "cuda")]
    Cuda(burn::backend::cuda::CudaDevice),
}

/// Runs `$body` with `$b` bound to the concrete burn backend of `$device` (a [`Device`]) and
/// `$dev` to its burn device.
///
/// ```
/// use mergesearch::device::DeviceSpec;
/// let device = DeviceSpec::Cpu.open().unwrap();
/// let name = mergesearch::with_backend!(device, |B, dev| {
///     let _ = &dev;
///     std::any::type_name::<B>()
/// });
/// assert!(name.contains("Flex"));
/// ```
#[macro_export]
macro_rules! with_backend {
    ($device:expr, |$b:ident, $dev:ident| $body:expr) => {
        match $device {
            $crate::device::Device::Cpu($dev) => {
                #[allow(dead_code)]
                type $b = burn::backend::Flex;
                $body
            }
            #[cfg(feature = "cuda")]
            $crate::device::Device::Cuda($dev) => {
                #[allow(dead_code)]
                type $b = burn::backend::Cuda;
                $body
            }
        }
    };
}

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
    pub fn open(self) -> Result<Device, DeviceError> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu(FlexDevice)),
            DeviceSpec::Cuda(index) => open_cuda(index),
        }
    }
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(index: usize) -> Result<Device, DeviceError> {
    Err(DeviceError::NotCompiled(index))
}

#[cfg(feature = "cuda")]
fn open_cuda(index: usize) -> Result<Device, DeviceError> {
    use burn::backend::Cuda;
    use burn::backend::cuda::CudaDevice;
    use burn::tensor::Tensor;

    use std::sync::{Arc, Mutex};

    let device = CudaDevice::new(index);
    // burn's CUDA runtime panics (sometimes on its own threads) when the driver or the GPU is
    // missing: catch that, keep the first panic message as the reason, and return an error.
    let messages = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = Arc::clone(&messages);
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if let Ok(mut m) = sink.lock() {
            m.push(info.payload_as_str().unwrap_or("unknown panic").to_string());
        }
    }));
    let probe = device.clone();
    let outcome = std::panic::catch_unwind(move || {
        Tensor::<Cuda, 1>::from_floats([1.0f32], &probe)
            .into_data()
            .to_vec::<f32>()
            .map(|v| v.first().copied() == Some(1.0))
    });
    std::panic::set_hook(previous_hook);
    let first_message = messages.lock().ok().and_then(|m| m.first().cloned());
    match outcome {
        Ok(Ok(true)) => Ok(Device::Cuda(device)),
        Ok(_) => Err(DeviceError::Unavailable {
            index,
            reason: "a test tensor did not round-trip".into(),
        }),
        Err(_) => Err(DeviceError::Unavailable {
            index,
            reason: first_message.unwrap_or_else(|| "the CUDA runtime failed to start".into()),
        }),
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
