//! The SemCLIP wire protocol, generated from `proto/semclip/v1/semclip.proto`.
//!
//! Conventions shared by every message (see the proto file): symbols are complex baseband
//! values sent as interleaved `(re, im)` f32 pairs, so a frame of `k` channel uses carries
//! `2k` floats; each frame is power-normalised so that `(1/k) * sum |x_i|^2 = 1`; the SNR in
//! dB is `10 * log10(1 / s2)` for unit symbol energy and complex noise variance `s2`.

#![allow(clippy::doc_lazy_continuation, clippy::large_enum_variant)]

/// Messages and services of package `semclip.v1`.
pub mod v1 {
    tonic::include_proto!("semclip.v1");

    /// Encoded `FileDescriptorSet` of the protocol, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("semclip_descriptor");
}

pub use v1::FILE_DESCRIPTOR_SET;
