"""What the window shows until a model is chosen."""

WELCOME = """<h2>Welcome to sdstudio</h2>
<p>To make images, sdstudio needs a Stable Diffusion model on this computer.</p>
<p>Choose one in the <b>Model</b> box on the left, with the <b>…</b> button:</p>
<ul>
<li>a <b>diffusers folder</b> (it holds <code>model_index.json</code>), such as one in your
Hugging Face cache (<code>~/.cache/huggingface/hub</code>), or</li>
<li>a <b>.safetensors</b> checkpoint, such as those in AUTOMATIC1111's
<code>models/Stable-diffusion</code> or ComfyUI's <code>models/checkpoints</code>.</li>
</ul>
<p>Or open <b>Models ▸ Manage models</b> (Ctrl+M) to add the model folders of
AUTOMATIC1111, ComfyUI or InvokeAI, or to download one.</p>
<p>Models are used where they are; nothing is copied. On a computer without a GPU,
a few-step model such as SD-Turbo is the quickest start.</p>
<p>Then type a prompt and press <b>Generate</b> (Ctrl+Enter).</p>"""
