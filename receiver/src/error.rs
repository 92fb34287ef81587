//! The one place where the receiver turns core-library errors into gRPC statuses.

use semclip_core::error::Error as CoreError;
use tonic::Status;

/// Maps a core-library error to the status a caller sees: bad caller input is
/// INVALID_ARGUMENT, a model or runtime failure is INTERNAL (the message names the model).
pub fn to_status(e: CoreError) -> Status {
    match &e {
        CoreError::InvalidInput(_)
        | CoreError::ImageDecode(_)
        | CoreError::ImageTooLarge { .. }
        | CoreError::Tokenizer(_) => Status::invalid_argument(e.to_string()),
        CoreError::Runtime(_) | CoreError::Provider(_) => Status::unavailable(e.to_string()),
        CoreError::Bundle { .. } | CoreError::Io { .. } | CoreError::Onnx { .. } => {
            Status::internal(e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn caller_mistakes_and_server_faults_get_different_codes() {
        let bad = CoreError::InvalidInput("labels is empty".into());
        assert_eq!(to_status(bad).code(), Code::InvalidArgument);

        let onnx = CoreError::Onnx {
            model: "jscc_k8_decoder.onnx".into(),
            message: "shape".into(),
        };
        let status = to_status(onnx);
        assert_eq!(status.code(), Code::Internal);
        assert!(status.message().contains("jscc_k8_decoder.onnx"));
    }
}
