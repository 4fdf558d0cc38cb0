package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Config is what login and register remember between runs. It is stored as
// JSON in config.json under ConfigDir, readable by its owner only because
// the token in it is as good as the password until it expires.
type Config struct {
	// Server is the server the token was issued by.
	Server string `json:"server,omitempty"`
	// TLS records whether that server was reached over TLS.
	TLS bool `json:"tls,omitempty"`
	// User is the logged-in user id.
	User string `json:"user,omitempty"`
	// Token is the access token.
	Token string `json:"token,omitempty"`
}

// configFile is the file name inside the config directory.
const configFile = "config.json"

// ConfigDir returns the directory that holds the config: $PARLEY_CONFIG_DIR
// if set (tests and multiple identities use it), else "parley" under the
// user's config directory (os.UserConfigDir).
func ConfigDir(getenv func(string) string) (string, error) {
	if dir := getenv("PARLEY_CONFIG_DIR"); dir != "" {
		return dir, nil
	}
	base, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("find the config directory (set PARLEY_CONFIG_DIR): %w", err)
	}
	return filepath.Join(base, "parley"), nil
}

// LoadConfig reads the config in dir. A missing file is an empty Config,
// not an error: nobody has logged in yet.
func LoadConfig(dir string) (Config, error) {
	var cfg Config
	b, err := os.ReadFile(filepath.Join(dir, configFile))
	if errors.Is(err, fs.ErrNotExist) {
		return cfg, nil
	}
	if err != nil {
		return cfg, fmt.Errorf("read config: %w", err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return cfg, fmt.Errorf("read config %s: %w", filepath.Join(dir, configFile), err)
	}
	return cfg, nil
}

// SaveConfig writes cfg to dir with mode 0600, creating dir with mode 0700
// if needed. It writes a temporary file and renames it over the old one so
// that a crash never leaves half a config, and the token is never readable
// by others even for a moment.
func SaveConfig(dir string, cfg Config) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save config: %w", err)
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return fmt.Errorf("save config: %w", err)
	}
	tmp, err := os.CreateTemp(dir, configFile+".*") // created 0600
	if err != nil {
		return fmt.Errorf("save config: %w", err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly after the rename
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("save config: %w", err)
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("save config: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("save config: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save config: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, configFile)); err != nil {
		return fmt.Errorf("save config: %w", err)
	}
	return nil
}
