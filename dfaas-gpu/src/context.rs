//! Getting a GPU: adapter and device, kept apart from the kernels so tests
//! and programs can share one.

use crate::split::MAX_ENTRIES;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Source of [`GpuContext`] ids (one per context made in this process).
static NEXT_CONTEXT_ID: AtomicU64 = AtomicU64::new(0);

/// The line of `split.wgsl` that [`specialise`] rewrites.
const MAX_ENTRIES_LINE: &str = "const MAX_ENTRIES: u32 = 64u;";

/// Why no GPU work can be done.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum GpuError {
    /// Occurs when no adapter (no Vulkan driver, not even Mesa's lavapipe)
    /// exists on this machine.
    NoAdapter(String),
    /// Occurs when the adapter refuses to create a device.
    Device(String),
    /// Occurs when a buffer cannot be read back.
    Readback(String),
    /// Occurs when an input does not fit a kernel (sizes, value ranges).
    Input {
        /// The input.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Occurs when a kernel or env is called with another [`GpuContext`]
    /// than the one it was built on (its buffers live on that device).
    ContextMismatch {
        /// Id of the context it was built on.
        built_on: u64,
        /// Id of the context it was called with.
        called_with: u64,
    },
    /// Occurs when a kernel's WGSL source cannot be specialised (a defect
    /// of this crate, reported instead of compiling a wrong kernel).
    Shader(String),
}

impl fmt::Display for GpuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoAdapter(why) => write!(
                f,
                "no GPU adapter: {why} (install a Vulkan driver; `apt-get install mesa-vulkan-drivers libvulkan1` gives a software one)"
            ),
            Self::Device(why) => write!(f, "GPU device request failed: {why}"),
            Self::Readback(why) => write!(f, "GPU readback failed: {why}"),
            Self::Input { field, reason } => write!(f, "{field}: {reason}"),
            Self::ContextMismatch {
                built_on,
                called_with,
            } => write!(
                f,
                "built on GPU context #{built_on} but called with context #{called_with}"
            ),
            Self::Shader(why) => write!(f, "WGSL specialisation failed: {why}"),
        }
    }
}

impl std::error::Error for GpuError {}

/// What crossed between host and device through a [`GpuContext`] since
/// it was made: every submit, upload and read-back of the crate's kernels
/// goes through the context, so these counts are complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Traffic {
    /// Command-buffer submissions (each read-back is one).
    pub submits: u64,
    /// Bytes written to device buffers (initial contents included).
    pub bytes_uploaded: u64,
    /// Bytes copied back to the host.
    pub bytes_read_back: u64,
}

impl std::ops::Sub for Traffic {
    type Output = Self;

    /// The traffic between two readings (`later − earlier`).
    fn sub(self, earlier: Self) -> Self {
        Self {
            submits: self.submits - earlier.submits,
            bytes_uploaded: self.bytes_uploaded - earlier.bytes_uploaded,
            bytes_read_back: self.bytes_read_back - earlier.bytes_read_back,
        }
    }
}

/// A device and its queue, with the adapter's description, an id unique in
/// this process (kernels and envs remember the id of the context they were
/// built on and refuse any other) and the [`Traffic`] through it.
#[derive(Debug)]
pub struct GpuContext {
    /// The device (resources; submissions go through the context).
    pub device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    id: u64,
    submits: AtomicU64,
    bytes_uploaded: AtomicU64,
    bytes_read_back: AtomicU64,
}

impl GpuContext {
    /// The high-performance adapter of the Vulkan backend and a device with
    /// the adapter's own limits.
    ///
    /// # Errors
    /// [`GpuError::NoAdapter`] when there is none, [`GpuError::Device`] when
    /// the device cannot be created.
    pub fn new() -> Result<Self, GpuError> {
        pollster::block_on(Self::request())
    }

    async fn request() -> Result<Self, GpuError> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: wgpu::Backends::VULKAN,
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::NoAdapter(e.to_string()))?;
        let info = adapter.get_info();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("dfaas"),
                required_limits: adapter.limits(),
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::Device(e.to_string()))?;
        Ok(Self {
            device,
            queue,
            info,
            id: NEXT_CONTEXT_ID.fetch_add(1, Ordering::Relaxed),
            submits: AtomicU64::new(0),
            bytes_uploaded: AtomicU64::new(0),
            bytes_read_back: AtomicU64::new(0),
        })
    }

    /// As [`GpuContext::new`], but `Ok(None)` (with a message on stderr) when
    /// this machine has no adapter at all — for tests and tools that may run
    /// without a GPU. With `DFAAS_REQUIRE_GPU=1` (set by CI, where lavapipe
    /// is installed) a missing adapter stays an error.
    ///
    /// # Errors
    /// As [`GpuContext::new`], except a missing adapter when not required.
    pub fn new_or_skip() -> Result<Option<Self>, GpuError> {
        match Self::new() {
            Ok(ctx) => Ok(Some(ctx)),
            Err(GpuError::NoAdapter(why))
                if std::env::var("DFAAS_REQUIRE_GPU").as_deref() != Ok("1") =>
            {
                eprintln!("skipping GPU work: no adapter ({why})");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// This context's id, unique among the contexts of this process.
    #[must_use]
    pub fn id(&self) -> u64 {
        self.id
    }

    /// `Ok` when `built_on` is this context's id.
    ///
    /// # Errors
    /// [`GpuError::ContextMismatch`] otherwise.
    pub(crate) fn check(&self, built_on: u64) -> Result<(), GpuError> {
        if built_on == self.id {
            Ok(())
        } else {
            Err(GpuError::ContextMismatch {
                built_on,
                called_with: self.id,
            })
        }
    }

    /// Compiles `source` with the shared WGSL functions (`split.wgsl`)
    /// prepended, their private arrays sized for `max_entries` entries (a
    /// split row or an incoming list): the smaller, the less private memory
    /// per invocation on a real GPU.
    ///
    /// # Errors
    /// As [`specialise`].
    pub(crate) fn shader(
        &self,
        label: &str,
        source: &str,
        max_entries: usize,
    ) -> Result<wgpu::ShaderModule, GpuError> {
        let shared = specialise(include_str!("split.wgsl"), max_entries)?;
        let full = format!("{shared}\n{source}");
        Ok(self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(label),
                source: wgpu::ShaderSource::Wgsl(full.into()),
            }))
    }

    /// Largest buffer a kernel may bind, in bytes: the device's storage
    /// binding and buffer limits, and below 4 GiB so that every word index
    /// fits in a WGSL `u32`.
    pub(crate) fn largest_buffer(&self) -> u64 {
        let limits = self.device.limits();
        limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size)
            .min(u64::from(u32::MAX))
    }

    /// The traffic through this context so far.
    #[must_use]
    pub fn traffic(&self) -> Traffic {
        Traffic {
            submits: self.submits.load(Ordering::Relaxed),
            bytes_uploaded: self.bytes_uploaded.load(Ordering::Relaxed),
            bytes_read_back: self.bytes_read_back.load(Ordering::Relaxed),
        }
    }

    /// Submits `encoder`'s commands (counted).
    pub(crate) fn submit(&self, encoder: wgpu::CommandEncoder) -> wgpu::SubmissionIndex {
        self.submits.fetch_add(1, Ordering::Relaxed);
        self.queue.submit([encoder.finish()])
    }

    /// Writes `bytes` into `buffer` at `offset` (counted).
    pub(crate) fn upload(&self, buffer: &wgpu::Buffer, offset: u64, bytes: &[u8]) {
        self.bytes_uploaded
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.queue.write_buffer(buffer, offset, bytes);
    }

    /// A buffer created with `contents` (counted as uploaded).
    pub(crate) fn buffer_with(
        &self,
        label: &str,
        contents: &[u8],
        usage: wgpu::BufferUsages,
    ) -> wgpu::Buffer {
        use wgpu::util::DeviceExt;
        self.bytes_uploaded
            .fetch_add(contents.len() as u64, Ordering::Relaxed);
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents,
                usage,
            })
    }

    /// Copies `buffer` (with `COPY_SRC` usage) back to the host.
    ///
    /// # Errors
    /// [`GpuError::Readback`] if the copy or the map fails.
    pub(crate) fn read_buffer<T: bytemuck::Pod>(
        &self,
        buffer: &wgpu::Buffer,
    ) -> Result<Vec<T>, GpuError> {
        let size = buffer.size();
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("readback"),
            });
        encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, Some(size));
        self.bytes_read_back.fetch_add(size, Ordering::Relaxed);
        let submission = self.submit(encoder);
        let slice = staging.slice(..);
        let (sender, receiver) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = sender.send(r);
        });
        let failed = |e: &dyn fmt::Display| GpuError::Readback(e.to_string());
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(submission),
                timeout: None,
            })
            .map_err(|e| failed(&e))?;
        receiver
            .recv()
            .map_err(|e| failed(&e))?
            .map_err(|e| failed(&e))?;
        let mapped = slice.get_mapped_range().map_err(|e| failed(&e))?;
        let values = bytemuck::cast_slice(&mapped).to_vec();
        drop(mapped);
        staging.unmap();
        Ok(values)
    }

    /// The adapter in use, e.g. `NVIDIA H100 (Vulkan, DiscreteGpu)`.
    #[must_use]
    pub fn describe(&self) -> String {
        format!(
            "{} ({:?}, {:?})",
            self.info.name, self.info.backend, self.info.device_type
        )
    }

    /// The adapter's details.
    #[must_use]
    pub fn info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// Whether the adapter runs on the CPU (a software rasteriser such as
    /// lavapipe): correct, but no faster than the CPU backend.
    #[must_use]
    pub fn is_software(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }
}

/// `shared` with its private arrays sized `max_entries`: the line
/// `const MAX_ENTRIES: u32 = 64u;` (which must occur exactly once) rewritten.
///
/// # Errors
/// [`GpuError::Shader`] when the line does not occur exactly once or
/// `max_entries` is outside `1..=64`.
pub(crate) fn specialise(shared: &str, max_entries: usize) -> Result<String, GpuError> {
    if !(1..=MAX_ENTRIES).contains(&max_entries) {
        return Err(GpuError::Shader(format!(
            "{max_entries} entries per private array; the kernels handle 1..={MAX_ENTRIES}"
        )));
    }
    let occurrences = shared.matches(MAX_ENTRIES_LINE).count();
    if occurrences != 1 {
        return Err(GpuError::Shader(format!(
            "`{MAX_ENTRIES_LINE}` occurs {occurrences} times in the shared source, not once"
        )));
    }
    Ok(shared.replace(
        MAX_ENTRIES_LINE,
        &format!("const MAX_ENTRIES: u32 = {max_entries}u;"),
    ))
}

#[cfg(test)]
mod tests;
