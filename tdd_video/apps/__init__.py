"""The layer users call: the Python API (load_img2vid, export_pipeline) and the img2vid / txt2img renders
with their settings. It uses sampling, families, lora and data; nothing below imports it."""
