//! The one place where the channel simulator turns errors into gRPC statuses.

use semclip_core::error::Error as CoreError;
use tonic::Status;

/// Maps a core-library error to the status a caller sees.
pub fn to_status(e: CoreError) -> Status {
    match e {
        CoreError::InvalidInput(_)
        | CoreError::ImageDecode(_)
        | CoreError::ImageTooLarge { .. } => Status::invalid_argument(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_input_is_invalid_argument() {
        let e =
            semclip_core::channel::ChannelModel::new(f32::NAN, Default::default(), 0).unwrap_err();
        assert_eq!(to_status(e).code(), tonic::Code::InvalidArgument);
    }
}
