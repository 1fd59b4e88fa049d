"""What a person looks at: the llama.cpp WebUI, the dashboard, the WebUI's resumable streams."""
