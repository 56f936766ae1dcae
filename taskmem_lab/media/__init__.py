"""Media stage: decoding video frames and audio, and laying files end to end as one stream."""
