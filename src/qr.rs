//! A QR code as a PNG image, for fingerprints a holder compares by eye or with a phone:
//! one bit per pixel, deflate-compressed by the `png` crate (a few KB).

use qrcode::{Color, EcLevel, QrCode};

/// Pixels per QR module and the quiet zone in modules.
const SCALE: usize = 6;
const QUIET: usize = 4;

#[derive(Debug, thiserror::Error)]
#[error("cannot make a QR code: {0}")]
pub struct QrError(String);

/// Renders `text` as a QR code PNG: black modules on white, a quiet zone of four modules,
/// six pixels a module, one-bit grey-scale.
pub fn png(text: &str) -> Result<Vec<u8>, QrError> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)
        .map_err(|e| QrError(e.to_string()))?;
    let modules = code.width();
    let colors = code.to_colors();
    let side = (modules + 2 * QUIET) * SCALE;
    let row_bytes = side.div_ceil(8);
    // one bit a pixel, most significant first; 1 is white
    let mut pixels = vec![0u8; row_bytes * side];
    for y in 0..side {
        for x in 0..side {
            let (mx, my) = (
                (x / SCALE).wrapping_sub(QUIET),
                (y / SCALE).wrapping_sub(QUIET),
            );
            let dark =
                mx < modules && my < modules && colors.get(my * modules + mx) == Some(&Color::Dark);
            if !dark && let Some(byte) = pixels.get_mut(y * row_bytes + x / 8) {
                *byte |= 0x80 >> (x % 8);
            }
        }
    }
    let side = u32::try_from(side).map_err(|_| QrError("the code is too large".into()))?;
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, side, side);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::One);
    encoder.set_compression(png::Compression::High);
    let mut writer = encoder.write_header().map_err(|e| QrError(e.to_string()))?;
    writer
        .write_image_data(&pixels)
        .map_err(|e| QrError(e.to_string()))?;
    writer.finish().map_err(|e| QrError(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use qrcode::{Color, EcLevel, QrCode};

    /// Decodes the PNG and checks every module against the QR code, and the quiet zone.
    #[test]
    fn png_decodes_to_the_code_with_its_quiet_zone() {
        let text = "3A5FC2D19B7E4F0A8C6D2E1B9F3A7C5D0E8B4A6F2C1D9E7B3A5F0C8D6E2B4A1F";
        let png = super::png(text).unwrap();
        println!("QR PNG of a fingerprint: {} bytes", png.len());
        assert!(png.len() < 8_000, "{} bytes: not compressed", png.len());

        let mut decoder = png::Decoder::new(std::io::Cursor::new(&png));
        decoder.set_transformations(png::Transformations::EXPAND);
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let frame = reader.next_frame(&mut buf).unwrap();
        assert_eq!(frame.color_type, png::ColorType::Grayscale);
        assert_eq!(frame.bit_depth, png::BitDepth::Eight);

        let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M).unwrap();
        let modules = code.width();
        let colors = code.to_colors();
        let (scale, quiet) = (super::SCALE, super::QUIET);
        let side = (modules + 2 * quiet) * scale;
        assert_eq!((frame.width as usize, frame.height as usize), (side, side));
        let pixel = |x: usize, y: usize| buf[y * frame.line_size + x];
        for y in 0..side {
            for x in 0..side {
                let (mx, my) = (
                    (x / scale).checked_sub(quiet),
                    (y / scale).checked_sub(quiet),
                );
                let dark = match (mx, my) {
                    (Some(mx), Some(my)) if mx < modules && my < modules => {
                        colors[my * modules + mx] == Color::Dark
                    }
                    _ => false,
                };
                assert_eq!(pixel(x, y), if dark { 0 } else { 255 }, "pixel ({x}, {y})");
            }
        }
    }
}
