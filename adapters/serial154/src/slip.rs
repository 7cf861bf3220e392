//! Framing on the serial line. SLIP (RFC 1055) as Contiki's and Zephyr's
//! slip-radio speak it; behind [`Framing`] so that another framing
//! (HDLC-lite, as OpenThread's Spinel uses) can take its place.

/// Bytes of the serial line in, frames out; frames in, bytes out.
pub trait Framing: Send {
    /// Feeds received bytes; returns the frames they complete.
    fn decode(&mut self, bytes: &[u8]) -> Vec<Result<Vec<u8>, FrameError>>;
    /// One frame as it goes on the line.
    fn encode(&self, frame: &[u8]) -> Vec<u8>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("SLIP escape followed by {0:#04x}")]
    BadEscape(u8),
    #[error("frame longer than {0} bytes")]
    Oversized(usize),
}

const END: u8 = 0xC0;
const ESC: u8 = 0xDB;
const ESC_END: u8 = 0xDC;
const ESC_ESC: u8 = 0xDD;

/// An 802.15.4 frame is at most 127 bytes; slip-radio's control messages
/// add a few. Anything much longer is line noise.
pub const MAX_FRAME: usize = 2048;

/// RFC 1055 SLIP. A frame is bytes between END bytes; an END at the start
/// flushes line noise (RFC 1055's recommendation, and what slip-radio does).
#[derive(Debug, Default)]
pub struct Slip {
    frame: Vec<u8>,
    escaped: bool,
    /// The current frame is bad; skip to the next END.
    broken: Option<FrameError>,
}

impl Framing for Slip {
    fn decode(&mut self, bytes: &[u8]) -> Vec<Result<Vec<u8>, FrameError>> {
        let mut frames = Vec::new();
        for &byte in bytes {
            if byte == END {
                match self.broken.take() {
                    Some(error) => frames.push(Err(error)),
                    None if !self.frame.is_empty() => {
                        frames.push(Ok(std::mem::take(&mut self.frame)))
                    }
                    None => {}
                }
                self.frame.clear();
                self.escaped = false;
                continue;
            }
            if self.broken.is_some() {
                continue;
            }
            let byte = if self.escaped {
                self.escaped = false;
                match byte {
                    ESC_END => END,
                    ESC_ESC => ESC,
                    other => {
                        self.broken = Some(FrameError::BadEscape(other));
                        continue;
                    }
                }
            } else if byte == ESC {
                self.escaped = true;
                continue;
            } else {
                byte
            };
            if self.frame.len() == MAX_FRAME {
                self.broken = Some(FrameError::Oversized(MAX_FRAME));
                self.frame.clear();
                continue;
            }
            self.frame.push(byte);
        }
        frames
    }

    fn encode(&self, frame: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(frame.len() + 4);
        out.push(END);
        for &byte in frame {
            match byte {
                END => out.extend_from_slice(&[ESC, ESC_END]),
                ESC => out.extend_from_slice(&[ESC, ESC_ESC]),
                other => out.push(other),
            }
        }
        out.push(END);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc_1055_escapes() {
        let slip = Slip::default();
        assert_eq!(
            slip.encode(&[1, END, 2, ESC, 3]),
            vec![END, 1, ESC, ESC_END, 2, ESC, ESC_ESC, 3, END]
        );
        let mut slip = Slip::default();
        let frames = slip.decode(&[END, 1, ESC, ESC_END, 2, END, END, 3]);
        assert_eq!(frames, vec![Ok(vec![1, END, 2])]);
        assert_eq!(
            slip.decode(&[4, END]),
            vec![Ok(vec![3, 4])],
            "a frame may span reads"
        );
    }

    #[test]
    fn a_bad_escape_drops_that_frame_only() {
        let mut slip = Slip::default();
        let frames = slip.decode(&[1, ESC, 0x42, 2, END, 5, END]);
        assert_eq!(frames, vec![Err(FrameError::BadEscape(0x42)), Ok(vec![5])]);
    }

    #[test]
    fn an_endless_frame_is_cut() {
        let mut slip = Slip::default();
        let mut line = vec![7u8; MAX_FRAME + 10];
        line.push(END);
        line.extend_from_slice(&[9, END]);
        assert_eq!(
            slip.decode(&line),
            vec![Err(FrameError::Oversized(MAX_FRAME)), Ok(vec![9])]
        );
    }

    proptest! {
        #[test]
        fn frames_round_trip_whatever_the_chunks(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..200), 0..8),
            cut in 1usize..50,
        ) {
            let slip = Slip::default();
            let line: Vec<u8> = frames.iter().flat_map(|f| slip.encode(f)).collect();
            let mut decoder = Slip::default();
            let decoded: Vec<_> = line.chunks(cut).flat_map(|c| decoder.decode(c)).collect();
            prop_assert_eq!(decoded, frames.into_iter().map(Ok).collect::<Vec<_>>());
        }

        #[test]
        fn any_line_noise_decodes_without_panic(line in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut decoder = Slip::default();
            for frame in decoder.decode(&line).into_iter().flatten() {
                prop_assert!(frame.len() <= MAX_FRAME);
            }
        }
    }
}
