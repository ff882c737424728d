//! Durations of the audio the engines make, read from the containers' headers:
//! WAV (what `espeak-ng --stdout` writes) and Ogg Opus (what `opusenc` and the
//! cloud engines' `opus` format write). No decoding.

/// Playing time of a PCM WAV, in milliseconds, from its sample count.
///
/// `espeak-ng --stdout` streams, so its header's sizes are placeholders
/// (0x7fff_f000): the `data` chunk is taken to run to the end of the bytes
/// when its declared size is larger than what is there.
pub fn wav_duration_ms(wav: &[u8]) -> Option<u64> {
    if wav.len() < 12 || &wav[0..4] != b"RIFF" || &wav[8..12] != b"WAVE" {
        return None;
    }
    let mut at = 12;
    let mut byte_rate = None;
    while at + 8 <= wav.len() {
        let id = &wav[at..at + 4];
        let size = u32::from_le_bytes(wav[at + 4..at + 8].try_into().ok()?) as usize;
        let body = at + 8;
        if id == b"fmt " {
            let rate = wav.get(body + 8..body + 12)?;
            byte_rate = Some(u64::from(u32::from_le_bytes(rate.try_into().ok()?)));
        } else if id == b"data" {
            let len = size.min(wav.len() - body) as u64;
            let rate = byte_rate.filter(|r| *r > 0)?;
            return Some(len * 1000 / rate);
        }
        at = body.checked_add(size)?.checked_add(size & 1)?;
    }
    None
}

/// Playing time of an Ogg Opus stream, in milliseconds: the last page's granule
/// position (48 kHz samples) less the pre-skip of the `OpusHead` header.
pub fn ogg_opus_duration_ms(ogg: &[u8]) -> Option<u64> {
    if !ogg.starts_with(b"OggS") {
        return None;
    }
    let head = find(ogg, b"OpusHead")?;
    let pre_skip = u64::from(u16::from_le_bytes(
        ogg.get(head + 10..head + 12)?.try_into().ok()?,
    ));
    // The last page header: "OggS", version, flags, then the granule position.
    let last = rfind(ogg, b"OggS")?;
    let granule = i64::from_le_bytes(ogg.get(last + 6..last + 14)?.try_into().ok()?);
    let samples = u64::try_from(granule).ok()?.saturating_sub(pre_skip);
    Some(samples * 1000 / 48_000)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(declared: u32, samples: usize) -> Vec<u8> {
        let mut w = Vec::new();
        w.extend_from_slice(b"RIFF\x24\xf0\xff\x7fWAVEfmt ");
        w.extend_from_slice(&16u32.to_le_bytes());
        w.extend_from_slice(&1u16.to_le_bytes()); // PCM
        w.extend_from_slice(&1u16.to_le_bytes()); // mono
        w.extend_from_slice(&22_050u32.to_le_bytes());
        w.extend_from_slice(&44_100u32.to_le_bytes()); // byte rate
        w.extend_from_slice(&2u16.to_le_bytes());
        w.extend_from_slice(&16u16.to_le_bytes());
        w.extend_from_slice(b"data");
        w.extend_from_slice(&declared.to_le_bytes());
        w.extend(std::iter::repeat_n(0u8, samples * 2));
        w
    }

    #[test]
    fn a_streamed_wav_counts_the_samples_that_are_there() {
        assert_eq!(wav_duration_ms(&wav(0x7fff_f000, 22_050)), Some(1000));
        assert_eq!(wav_duration_ms(&wav(22_050, 44_100)), Some(500));
        assert_eq!(wav_duration_ms(b"not a wav at all"), None);
        assert_eq!(wav_duration_ms(&wav(10, 0)[..30]), None);
    }

    #[test]
    fn ogg_opus_duration_is_the_last_granule_less_pre_skip() {
        let mut ogg = Vec::new();
        ogg.extend_from_slice(b"OggS\0\x02");
        ogg.extend_from_slice(&0i64.to_le_bytes());
        ogg.extend_from_slice(&[0; 13]);
        ogg.extend_from_slice(b"OpusHead\x01\x01");
        ogg.extend_from_slice(&312u16.to_le_bytes());
        ogg.extend_from_slice(&[0; 20]);
        ogg.extend_from_slice(b"OggS\0\x04");
        ogg.extend_from_slice(&(96_000i64 + 312).to_le_bytes());
        assert_eq!(ogg_opus_duration_ms(&ogg), Some(2000));
        assert_eq!(ogg_opus_duration_ms(b"ID3 mp3"), None);
    }
}
